//! `mode = "register"`: Parquet files that already exist become data files of the table as
//! they are — not read, copied or rewritten. Each run adds the files the source lists that
//! the table does not reference yet, in one `append` snapshot carrying the run's state, with
//! the record count, column statistics and partition each manifest entry needs taken from
//! the file's footer (and its `k=v/` directories). Files without Iceberg field ids are read
//! through the table's name mapping (`schema.name-mapping.default`), which the commit
//! writes.

mod footer;
mod partition;

use std::collections::HashSet;
use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Schema as ArrowSchema, TimeUnit};
use futures::{StreamExt, TryStreamExt, stream};
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Schema};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use pipe_framework::ExistingFile;

use self::footer::Footer;
use crate::error::{IcebergError, Result};

/// Footers read at the same time.
const PARALLEL: usize = 16;

/// A listed file the table does not reference yet, with its footer.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub file: ExistingFile,
    footer: Footer,
}

impl Candidate {
    pub(crate) fn rows(&self) -> u64 {
        self.footer.rows()
    }
}

/// The files of `listed` not in `registered` (the table's live data files), with their
/// footers.
pub(crate) async fn new_files(
    io: &FileIO,
    listed: Vec<ExistingFile>,
    registered: &HashSet<String>,
) -> Result<Vec<Candidate>> {
    let fresh: Vec<ExistingFile> = listed
        .into_iter()
        .filter(|f| !registered.contains(&f.location))
        .collect();
    stream::iter(fresh)
        .map(|file| {
            let io = io.clone();
            async move {
                let footer = footer::read(&io, &file).await?;
                Ok::<_, IcebergError>(Candidate { file, footer })
            }
        })
        .buffered(PARALLEL)
        .try_collect()
        .await
}

fn field_id(f: &Field) -> Option<i32> {
    f.metadata()
        .get(PARQUET_FIELD_ID_META_KEY)
        .and_then(|v| v.parse().ok())
}

/// Check every candidate's columns against `table` (whose Arrow form is `arrow`); returns
/// the columns some file has and the table does not, each once, in the order first seen.
pub(crate) fn check_columns(
    candidates: &[Candidate],
    table: &Schema,
    arrow: &ArrowSchema,
) -> Result<Vec<FieldRef>> {
    let mut extra: Vec<FieldRef> = Vec::new();
    for c in candidates {
        let location = &c.file.location;
        let mut seen = HashSet::new();
        for field in c.footer.arrow.fields() {
            let column = match field_id(field) {
                Some(id) => {
                    let Some(column) = table.field_by_id(id) else {
                        return Err(IcebergError::Config(format!(
                            "{location}: column `{}` has Iceberg field id {id}, which table \
                             column has none (the file was written for another table?)",
                            field.name()
                        )));
                    };
                    if &column.name != field.name() {
                        return Err(IcebergError::Config(format!(
                            "{location}: column `{}` has field id {id}, the id of the table's \
                             column `{}`: its ids come from another table",
                            field.name(),
                            column.name
                        )));
                    }
                    column.clone()
                }
                None => match table.field_by_name(field.name()) {
                    Some(column) => column.clone(),
                    None => {
                        if !extra.iter().any(|e| e.name() == field.name()) {
                            extra.push(field.clone());
                        }
                        continue;
                    }
                },
            };
            seen.insert(column.id);
            let Ok(want) = arrow.field_with_name(&column.name) else {
                continue;
            };
            if !compatible(field.data_type(), want.data_type()) {
                return Err(IcebergError::Config(format!(
                    "{location}: column `{}` is {} but the table's is {}",
                    field.name(),
                    field.data_type(),
                    want.data_type()
                )));
            }
            if field.is_nullable() && column.required {
                return Err(IcebergError::Config(format!(
                    "{location}: column `{}` may hold NULLs, but the table's is required",
                    field.name()
                )));
            }
        }
        if let Some(missing) = table
            .as_struct()
            .fields()
            .iter()
            .find(|f| f.required && !seen.contains(&f.id))
        {
            return Err(IcebergError::Config(format!(
                "{location} has no column `{}`, which the table requires",
                missing.name
            )));
        }
    }
    Ok(extra)
}

/// Whether a file column of type `file` reads as the table's `table` type: the same type, or
/// one Iceberg readers promote (int → long, float → double, a wider decimal), with Arrow's
/// string/binary/list variants taken as one.
fn compatible(file: &DataType, table: &DataType) -> bool {
    use DataType::*;
    let string = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    match (file, table) {
        (a, b) if a == b => true,
        (a, b) if string(a) && string(b) => true,
        (a, b) if binary(a) && binary(b) => true,
        (Int8 | Int16 | Int32, Int32 | Int64) | (Int64, Int64) => true,
        (Float32, Float64) => true,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => s1 == s2 && p1 <= p2,
        (Timestamp(TimeUnit::Microsecond, a), Timestamp(TimeUnit::Microsecond, b)) => {
            a.is_some() == b.is_some()
        }
        (List(f) | LargeList(f), List(g) | LargeList(g)) => {
            compatible(f.data_type(), g.data_type())
        }
        (Map(f, _), Map(g, _)) => compatible(f.data_type(), g.data_type()),
        (Struct(fs), Struct(gs)) => fs.iter().all(|f| {
            gs.iter()
                .find(|g| g.name() == f.name())
                .is_some_and(|g| compatible(f.data_type(), g.data_type()))
        }),
        _ => false,
    }
}

/// The manifest entries of `candidates` in the table with `schema` and default partition
/// spec `spec` (id `spec_id`).
pub(crate) fn data_files(
    candidates: &[Candidate],
    schema: &Schema,
    spec: &iceberg::spec::PartitionSpec,
) -> Result<Vec<DataFile>> {
    candidates
        .iter()
        .map(|c| {
            let stats = footer::stats(&c.footer, schema);
            let rows = c.footer.rows();
            let partition = partition::partition_of(spec, schema, &stats, rows, &c.file.location)?;
            DataFileBuilder::default()
                .content(DataContentType::Data)
                .file_path(c.file.location.clone())
                .file_format(DataFileFormat::Parquet)
                .partition(partition)
                .partition_spec_id(spec.spec_id())
                .record_count(rows)
                .file_size_in_bytes(c.file.size)
                .column_sizes(stats.column_sizes)
                .value_counts(stats.value_counts)
                .null_value_counts(stats.null_counts)
                .lower_bounds(stats.lower)
                .upper_bounds(stats.upper)
                .build()
                .map_err(|e| {
                    IcebergError::Internal(format!(
                        "the manifest entry of {}: {e}",
                        c.file.location
                    ))
                })
        })
        .collect()
}

/// The table's Arrow columns plus `extra` (for planning the evolved schema).
pub(crate) fn with_columns(table: &ArrowSchema, extra: &[FieldRef]) -> ArrowSchema {
    let mut fields: Vec<FieldRef> = table.fields().iter().cloned().collect();
    fields.extend(
        extra
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_metadata(Default::default()))),
    );
    ArrowSchema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotable_and_equivalent_types_are_compatible() {
        use DataType::*;
        assert!(compatible(&Int32, &Int64));
        assert!(compatible(&LargeUtf8, &Utf8));
        assert!(compatible(&Decimal128(10, 2), &Decimal128(12, 2)));
        assert!(!compatible(&Decimal128(10, 2), &Decimal128(12, 3)));
        assert!(!compatible(&Int64, &Int32));
        assert!(!compatible(&Utf8, &Int64));
        assert!(!compatible(
            &Timestamp(TimeUnit::Nanosecond, None),
            &Timestamp(TimeUnit::Microsecond, None)
        ));
        assert!(!compatible(
            &Timestamp(TimeUnit::Microsecond, None),
            &Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        ));
    }
}
