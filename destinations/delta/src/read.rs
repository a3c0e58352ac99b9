//! Reading a live data file back in the table's schema: the columns the file stores (by
//! name), the partition columns from the file's `partitionValues`, and NULL for columns added
//! after the file was written. Used by merge and `replace_where` to rewrite files.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray, new_null_array};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_schema::{Schema, SchemaRef};
use deltalake::kernel::Remove;
use deltalake::logstore::ObjectStoreRef;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};

use crate::error::{DeltaError, Result, data};

/// Rows per batch read back.
const READ_BATCH_ROWS: usize = 64 * 1024;

/// A live data file of the table (as the `remove` action that would drop it).
#[derive(Debug, Clone)]
pub(crate) struct LiveFile {
    /// The action removing it; its path, size and partition values describe the file.
    pub remove: Remove,
    /// Its column statistics (`stats` JSON), if recorded.
    pub stats: Option<String>,
    /// Whether a deletion vector hides some of its rows.
    pub has_deletion_vector: bool,
}

impl LiveFile {
    fn path(&self) -> Path {
        Path::parse(&self.remove.path).unwrap_or_else(|_| Path::from(self.remove.path.as_str()))
    }

    /// The file's partition value of `column` (`None`: NULL or not a partition column).
    pub(crate) fn partition_value(&self, column: &str) -> Option<&str> {
        self.remove
            .partition_values
            .as_ref()
            .and_then(|m| m.get(column))
            .and_then(|v| v.as_deref())
    }
}

/// `value` (a partition value string, or NULL) as a column of `rows` rows of `field`'s type.
pub(crate) fn constant(
    value: Option<&str>,
    field: &arrow_schema::Field,
    rows: usize,
) -> Result<ArrayRef> {
    let Some(value) = value else {
        return Ok(new_null_array(field.data_type(), rows));
    };
    let strings: ArrayRef = Arc::new(StringArray::from(vec![value; rows]));
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(&strings, field.data_type(), &options).map_err(data(format!(
        "reading partition value `{value}` of column `{}`",
        field.name()
    )))
}

/// Stream `file`'s rows as batches of `schema` (the table's schema or a projection of it;
/// partition columns named in `partition_columns`).
pub(crate) async fn read(
    store: &ObjectStoreRef,
    file: &LiveFile,
    schema: SchemaRef,
    partition_columns: &[String],
) -> Result<impl Stream<Item = Result<RecordBatch>> + Send + use<>> {
    let what = format!("reading data file {}", file.remove.path);
    let mut reader = ParquetObjectReader::new(Arc::clone(store), file.path());
    if let Some(size) = file.remove.size.and_then(|s| u64::try_from(s).ok()) {
        reader = reader.with_file_size(size);
    }
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(data(what.clone()))?;
    let file_schema: &Schema = builder.schema();
    // Which top-level file columns feed `schema`.
    let by_name: HashMap<&str, usize> = file_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name().as_str(), i))
        .collect();
    let wanted: Vec<usize> = schema
        .fields()
        .iter()
        .filter(|f| !partition_columns.contains(f.name()))
        .filter_map(|f| by_name.get(f.name().as_str()).copied())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
    let stream = builder
        .with_projection(mask)
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(data(what.clone()))?;
    let file = file.clone();
    let partition_columns = partition_columns.to_vec();
    Ok(stream
        .map_err(move |e| data(what.clone())(e))
        .map(move |batch| {
            let batch = batch?;
            to_schema(&batch, &schema, &file, &partition_columns)
        }))
}

/// One batch read from a file (its columns in file order, found by name) in `schema`.
fn to_schema(
    batch: &RecordBatch,
    schema: &SchemaRef,
    file: &LiveFile,
    partition_columns: &[String],
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            if partition_columns.contains(field.name()) {
                return constant(file.partition_value(field.name()), field, rows);
            }
            match batch.schema().index_of(field.name()).ok() {
                Some(i) if batch.column(i).data_type() == field.data_type() => {
                    Ok(batch.column(i).clone())
                }
                Some(i) => cast_with_options(batch.column(i), field.data_type(), &options)
                    .map_err(data(format!("converting column `{}`", field.name()))),
                None => Ok(new_null_array(field.data_type(), rows)),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| DeltaError::Internal(format!("rebuilding a batch of {}: {e}", file.remove.path)))
}
