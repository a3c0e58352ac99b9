//! Reading a table's data files for a merge: columns matched by Iceberg field id (so files
//! written before a schema change, or by another engine, read correctly) — or by name for
//! files written without ids (registered files, as the table's name mapping maps them) —
//! streamed in batches.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow_cast::cast;
use arrow_schema::{DataType, Field, FieldRef, SchemaRef};
use futures::TryStreamExt;
use iceberg::arrow::ArrowFileReader;
use iceberg::io::FileIO;
use iceberg::spec::Schema;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::arrow::{PARQUET_FIELD_ID_META_KEY, ProjectionMask};

use crate::error::{IcebergError, Result, data, ice};
use arrow_buffer::BooleanBuffer;
use futures::StreamExt;
use pipe_framework::cluster::{self, RemainsStream, SortKey};
use pipe_framework::merge_keys::{FileScan, KeyIndex};

const BATCH_ROWS: usize = 64 * 1024;

fn field_id(f: &Field) -> Option<i32> {
    f.metadata()
        .get(PARQUET_FIELD_ID_META_KEY)
        .and_then(|v| v.parse().ok())
}

/// A data file opened for reading, with the table field id of each of its top-level
/// columns: the file's own ids, or — for a file written without them (registered from
/// elsewhere) — the id of the current table column of the same name (what the name mapping
/// pipe writes says; a column renamed by another engine since would not be found).
async fn open(
    io: &FileIO,
    path: &str,
    table: &Schema,
) -> Result<(ParquetRecordBatchStreamBuilder<ArrowFileReader>, FileIds)> {
    let builder = open_unchecked(io, path).await?;
    let fields = builder.schema().fields();
    let by_name = !fields.iter().any(|f| field_id(f).is_some());
    let ids = fields
        .iter()
        .map(|f| {
            if by_name {
                table.field_by_name(f.name()).map(|t| t.id)
            } else {
                field_id(f)
            }
        })
        .collect();
    Ok((builder, FileIds { ids, by_name }))
}

/// The table field id of each top-level column of a file (or of a projection of it).
#[derive(Debug, Clone)]
struct FileIds {
    ids: Vec<Option<i32>>,
    /// The file has no field ids: columns were matched by name.
    by_name: bool,
}

impl FileIds {
    /// Index of the column with field id `id`.
    fn position(&self, id: i32) -> Option<usize> {
        self.ids.iter().position(|i| *i == Some(id))
    }

    /// The ids of the columns at `roots` (a projection, in ascending order).
    fn project(&self, roots: &[usize]) -> FileIds {
        FileIds {
            ids: roots
                .iter()
                .map(|r| self.ids.get(*r).copied().flatten())
                .collect(),
            by_name: self.by_name,
        }
    }
}

async fn open_unchecked(
    io: &FileIO,
    path: &str,
) -> Result<ParquetRecordBatchStreamBuilder<ArrowFileReader>> {
    let input = io
        .new_input(path)
        .map_err(ice(format!("opening data file {path}")))?;
    let meta = input
        .metadata()
        .await
        .map_err(ice(format!("opening data file {path}")))?;
    let reader = input
        .reader()
        .await
        .map_err(ice(format!("opening data file {path}")))?;
    ParquetRecordBatchStreamBuilder::new(ArrowFileReader::new(meta, reader))
        .await
        .map_err(data(format!("reading data file {path}")))
}

/// The field ids of a nested type's children, depth first (empty for primitives).
fn nested_ids(dt: &DataType, out: &mut Vec<Option<i32>>) {
    let children: Vec<&FieldRef> = match dt {
        DataType::Struct(fields) => fields.iter().collect(),
        DataType::List(f) | DataType::LargeList(f) | DataType::Map(f, _) => vec![f],
        _ => return,
    };
    for child in children {
        out.push(field_id(child));
        nested_ids(child.data_type(), out);
    }
}

/// `column` as `to`'s type (files written before a type was widened hold the narrower type).
/// Nested columns convert only when their children carry the same field ids in the same
/// places: Arrow casts structs by position, which would move values between fields.
fn conform(column: &ArrayRef, to: &Field, path: &str, by_name: bool) -> Result<ArrayRef> {
    if column.data_type() == to.data_type() {
        return Ok(column.clone());
    }
    if column.data_type().is_nested() {
        // The same children in the same places: by field id, or — for a file without ids —
        // by name and type.
        let same = if by_name {
            crate::schema::bare(column.data_type()) == crate::schema::bare(to.data_type())
        } else {
            let (mut have, mut want) = (Vec::new(), Vec::new());
            nested_ids(column.data_type(), &mut have);
            nested_ids(to.data_type(), &mut want);
            have == want
        };
        if !same {
            return Err(IcebergError::Config(format!(
                "data file {path}: nested column `{}` was written with another layout ({}) \
                 than the table's ({}); pipe cannot rewrite it in a merge",
                to.name(),
                column.data_type(),
                to.data_type()
            )));
        }
    }
    cast(column, to.data_type()).map_err(data(format!(
        "data file {path}: converting column `{}` from {} to {}",
        to.name(),
        column.data_type(),
        to.data_type()
    )))
}

/// The columns with field ids `ids` of `batch` (read from `path`) in `write_schema`'s types,
/// where the column of the table is at `at[i]`; NULLs for a column the file predates.
fn columns(
    batch: &RecordBatch,
    ids: &[i32],
    at: &[usize],
    write_schema: &SchemaRef,
    file: &FileIds,
    path: &str,
) -> Result<Vec<ArrayRef>> {
    ids.iter()
        .zip(at)
        .map(|(id, &at)| {
            let target = write_schema.field(at);
            Ok(match file.position(*id) {
                Some(i) => conform(batch.column(i), target, path, file.by_name)?,
                None => new_null_array(target.data_type(), batch.num_rows()),
            })
        })
        .collect()
}

/// Scan data file `path`'s merge keys (and cluster key columns): which incoming keys it
/// holds, which of its rows stay, and whether its rows are in cluster key order.
pub(super) async fn scan(
    io: &FileIO,
    path: &str,
    table: &Schema,
    keys: &KeyIndex,
    write_schema: &SchemaRef,
    cluster: Option<&SortKey>,
) -> Result<FileScan> {
    let (builder, file_ids) = open(io, path, table).await?;
    let id_of = |at: &usize| table.as_struct().fields()[*at].id;
    let key_ids: Vec<i32> = keys.columns.iter().map(id_of).collect();
    let cluster_at: &[usize] = cluster.map_or(&[], |k| k.columns());
    let cluster_ids: Vec<i32> = cluster_at.iter().map(id_of).collect();
    // A key column the file predates holds NULLs (which match incoming NULL keys); read at
    // least one column for the row counts.
    let mut roots: Vec<usize> = key_ids
        .iter()
        .chain(&cluster_ids)
        .filter_map(|id| file_ids.position(*id))
        .collect();
    roots.sort_unstable();
    roots.dedup();
    if roots.is_empty() {
        roots.push(0);
    }
    let projected = file_ids.project(&roots);
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let mut stream = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(data(format!("reading data file {path}")))?;
    let mut scan = FileScan::default();
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(data(format!("reading data file {path}")))?
    {
        let key_columns = columns(
            &batch,
            &key_ids,
            &keys.columns,
            write_schema,
            &projected,
            path,
        )?;
        let sort_columns = cluster
            .map(|_| {
                columns(
                    &batch,
                    &cluster_ids,
                    cluster_at,
                    write_schema,
                    &projected,
                    path,
                )
            })
            .transpose()?;
        scan.add(keys, &key_columns, cluster.zip(sort_columns.as_deref()))?;
    }
    Ok(scan)
}

/// Data file `path`'s rows in the table's current schema, read again after its key scan,
/// with those the scan's `keep` marks staying.
pub(super) async fn remainder(
    io: &FileIO,
    path: &str,
    table: &Schema,
    write_schema: &SchemaRef,
    keep: BooleanBuffer,
) -> Result<RemainsStream<'static>> {
    let batches = batches(io, path, table, write_schema).await?;
    let rows = batches.map_err(pipe_framework::Error::from).boxed();
    Ok(cluster::kept_rows(path, rows, keep))
}

/// Data file `path`'s rows in the table's current schema (columns by field id; NULL for
/// columns added after the file was written), streamed in batches.
pub(crate) async fn batches(
    io: &FileIO,
    path: &str,
    table: &Schema,
    write_schema: &SchemaRef,
) -> Result<impl futures::Stream<Item = Result<RecordBatch>> + Send + use<>> {
    let (builder, file_ids) = open(io, path, table).await?;
    let sources: Vec<Option<usize>> = table
        .as_struct()
        .fields()
        .iter()
        .map(|f| file_ids.position(f.id))
        .collect();
    let by_name = file_ids.by_name;
    let stream = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(data(format!("reading data file {path}")))?;
    let (path, write_schema) = (path.to_string(), Arc::clone(write_schema));
    Ok(stream
        .map_err({
            let path = path.clone();
            move |e| data(format!("reading data file {path}"))(e)
        })
        .and_then(move |batch| {
            let projected = project(&batch, &sources, &write_schema, &path, by_name);
            futures::future::ready(projected)
        }))
}

/// One batch read from a file in the table's schema.
fn project(
    batch: &RecordBatch,
    sources: &[Option<usize>],
    write_schema: &SchemaRef,
    path: &str,
    by_name: bool,
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(sources.len());
    for (field, source) in write_schema.fields().iter().zip(sources) {
        columns.push(match source {
            Some(i) => conform(batch.column(*i), field, path, by_name)?,
            None => new_null_array(field.data_type(), rows),
        });
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(Arc::clone(write_schema), columns, &options).map_err(data(
        format!("data file {path}: projecting to the table schema"),
    ))
}
