//! What a Parquet footer says about a file being registered: its Arrow schema (field ids
//! included, if written), and the column statistics a manifest records — value, null and
//! size counts and lower/upper bounds — per Iceberg field id, read without touching the
//! rows.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::arrow::ArrowFileReader;
use iceberg::io::{FileIO, FileMetadata};
use iceberg::spec::{Datum, NestedFieldRef, PrimitiveType, Schema, Type};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::basic::{LogicalType, TimeUnit, Type as Physical};
use parquet::file::metadata::ParquetMetaData;
use parquet::schema::types::ColumnDescriptor;
use pipe_framework::ExistingFile;

use crate::error::{IcebergError, Result};

/// A registered file's footer.
#[derive(Debug, Clone)]
pub(crate) struct Footer {
    /// The file's columns as Arrow reads them (`PARQUET:field_id` metadata when written).
    pub arrow: ArrowSchemaRef,
    pub metadata: Arc<ParquetMetaData>,
}

impl Footer {
    /// Whether the file's columns carry Iceberg field ids.
    pub(crate) fn has_ids(&self) -> bool {
        self.metadata
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .any(|c| c.self_type().get_basic_info().has_id())
    }

    pub(crate) fn rows(&self) -> u64 {
        u64::try_from(self.metadata.file_metadata().num_rows()).unwrap_or(0)
    }
}

/// Read `file`'s footer (two small ranged reads).
pub(crate) async fn read(io: &FileIO, file: &ExistingFile) -> Result<Footer> {
    let unreadable = |e: &dyn std::fmt::Display| {
        IcebergError::Config(format!(
            "{} is not a readable Parquet file: {e}",
            file.location
        ))
    };
    let input = io.new_input(&file.location).map_err(|e| unreadable(&e))?;
    let reader = input.reader().await.map_err(|e| unreadable(&e))?;
    let mut reader = ArrowFileReader::new(FileMetadata { size: file.size }, reader);
    let loaded = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
        .await
        .map_err(|e| unreadable(&e))?;
    Ok(Footer {
        arrow: loaded.schema().clone(),
        metadata: loaded.metadata().clone(),
    })
}

/// Column statistics by Iceberg field id, as a manifest records them.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub column_sizes: HashMap<i32, u64>,
    pub value_counts: HashMap<i32, u64>,
    pub null_counts: HashMap<i32, u64>,
    pub lower: HashMap<i32, Datum>,
    pub upper: HashMap<i32, Datum>,
}

/// The table field of each of the file's leaf columns: by the file's field id when it has
/// them, else by name path (top-level columns and struct fields; lists and maps get no
/// statistics).
fn leaf_field(
    column: &ColumnDescriptor,
    table: &Schema,
    by_id: bool,
) -> Option<(i32, PrimitiveType)> {
    let field: NestedFieldRef = if by_id {
        let info = column.self_type().get_basic_info();
        if !info.has_id() {
            return None;
        }
        table.field_by_id(info.id())?.clone()
    } else {
        let mut fields = table.as_struct().fields().to_vec();
        let mut found = None;
        for part in column.path().parts() {
            let field = fields.iter().find(|f| &f.name == part)?.clone();
            if let Type::Struct(s) = field.field_type.as_ref() {
                fields = s.fields().to_vec();
            } else {
                fields = Vec::new();
            }
            found = Some(field);
        }
        found?
    };
    match field.field_type.as_ref() {
        Type::Primitive(p) => Some((field.id, p.clone())),
        _ => None,
    }
}

/// The statistics of every leaf column that maps to a primitive field of `table`.
pub(crate) fn stats(footer: &Footer, table: &Schema) -> Stats {
    let by_id = footer.has_ids();
    let descr = footer.metadata.file_metadata().schema_descr();
    let mut out = Stats::default();
    for (i, column) in descr.columns().iter().enumerate() {
        let Some((id, ty)) = leaf_field(column, table, by_id) else {
            continue;
        };
        let mut nulls: Option<u64> = Some(0);
        let mut bounds: Option<(Datum, Datum)> = None;
        let mut bounded = true;
        for group in footer.metadata.row_groups() {
            let chunk = group.column(i);
            *out.column_sizes.entry(id).or_default() +=
                u64::try_from(chunk.compressed_size()).unwrap_or(0);
            let values = u64::try_from(chunk.num_values()).unwrap_or(0);
            *out.value_counts.entry(id).or_default() += values;
            let Some(st) = chunk.statistics() else {
                nulls = None;
                bounded = false;
                continue;
            };
            let chunk_nulls = st.null_count_opt();
            nulls = nulls.zip(chunk_nulls).map(|(a, b)| a + b);
            if chunk_nulls == Some(values) {
                continue; // all NULL: no bounds to add
            }
            let lo = st
                .min_bytes_opt()
                .and_then(|b| datum(column, b, &ty, false));
            let hi = st.max_bytes_opt().and_then(|b| datum(column, b, &ty, true));
            match (lo, hi) {
                (Some(lo), Some(hi)) => {
                    bounds = Some(match bounds {
                        None => (lo, hi),
                        Some((a, b)) => (min(a, lo), max(b, hi)),
                    });
                }
                _ => bounded = false,
            }
        }
        if let Some(n) = nulls {
            out.null_counts.insert(id, n);
        }
        if bounded && let Some((lo, hi)) = bounds {
            out.lower.insert(id, lo);
            out.upper.insert(id, hi);
        }
    }
    out
}

fn min(a: Datum, b: Datum) -> Datum {
    if b.partial_cmp(&a) == Some(Ordering::Less) {
        b
    } else {
        a
    }
}

fn max(a: Datum, b: Datum) -> Datum {
    if b.partial_cmp(&a) == Some(Ordering::Greater) {
        b
    } else {
        a
    }
}

/// A statistics value (Parquet's plain encoding of the physical type) as a bound of the
/// Iceberg type `ty`. `upper`: round up when converting units. `None` when it cannot be
/// converted exactly enough to stay a bound (NaN, invalid UTF-8, unknown units).
fn datum(
    column: &ColumnDescriptor,
    bytes: &[u8],
    ty: &PrimitiveType,
    upper: bool,
) -> Option<Datum> {
    let logical = column.logical_type_ref();
    let i32_of = |b: &[u8]| b.try_into().ok().map(i32::from_le_bytes);
    let i64_of = |b: &[u8]| b.try_into().ok().map(i64::from_le_bytes);
    match (column.physical_type(), ty) {
        (Physical::BOOLEAN, PrimitiveType::Boolean) => Some(Datum::bool(*bytes.first()? != 0)),
        (Physical::INT32, PrimitiveType::Int) => Some(Datum::int(i32_of(bytes)?)),
        (Physical::INT32, PrimitiveType::Long) => Some(Datum::long(i64::from(i32_of(bytes)?))),
        (Physical::INT32, PrimitiveType::Date) => Some(Datum::date(i32_of(bytes)?)),
        (Physical::INT32, PrimitiveType::Time) => {
            let millis = i64::from(i32_of(bytes)?);
            Datum::time_micros(millis.checked_mul(1000)?).ok()
        }
        (Physical::INT64, PrimitiveType::Long) => Some(Datum::long(i64_of(bytes)?)),
        (
            Physical::INT64,
            PrimitiveType::Time | PrimitiveType::Timestamp | PrimitiveType::Timestamptz,
        ) => {
            let unit = match logical {
                Some(LogicalType::Timestamp { unit, .. })
                | Some(LogicalType::Time { unit, .. }) => *unit,
                _ => return None,
            };
            let micros = to_micros(i64_of(bytes)?, &unit, upper)?;
            match ty {
                PrimitiveType::Time => Datum::time_micros(micros).ok(),
                PrimitiveType::Timestamp => Some(Datum::timestamp_micros(micros)),
                _ => Some(Datum::timestamptz_micros(micros)),
            }
        }
        (Physical::INT32, PrimitiveType::Decimal { .. }) => decimal(i128::from(i32_of(bytes)?), ty),
        (Physical::INT64, PrimitiveType::Decimal { .. }) => decimal(i128::from(i64_of(bytes)?), ty),
        (Physical::FLOAT, PrimitiveType::Float | PrimitiveType::Double) => {
            let v = f32::from_le_bytes(bytes.try_into().ok()?);
            if v.is_nan() {
                return None;
            }
            Some(match ty {
                PrimitiveType::Float => Datum::float(v),
                _ => Datum::double(f64::from(v)),
            })
        }
        (Physical::DOUBLE, PrimitiveType::Double) => {
            let v = f64::from_le_bytes(bytes.try_into().ok()?);
            (!v.is_nan()).then(|| Datum::double(v))
        }
        (Physical::BYTE_ARRAY, PrimitiveType::String) => {
            Some(Datum::string(std::str::from_utf8(bytes).ok()?))
        }
        (Physical::BYTE_ARRAY, PrimitiveType::Binary) => Some(Datum::binary(bytes.to_vec())),
        (
            Physical::BYTE_ARRAY | Physical::FIXED_LEN_BYTE_ARRAY,
            PrimitiveType::Decimal { .. } | PrimitiveType::Uuid | PrimitiveType::Fixed(_),
        ) => Datum::try_from_bytes(bytes, ty.clone()).ok(),
        _ => None,
    }
}

fn to_micros(value: i64, unit: &TimeUnit, upper: bool) -> Option<i64> {
    match unit {
        TimeUnit::MICROS => Some(value),
        TimeUnit::MILLIS => value.checked_mul(1000),
        TimeUnit::NANOS => Some(if upper {
            value.div_euclid(1000) + i64::from(value.rem_euclid(1000) != 0)
        } else {
            value.div_euclid(1000)
        }),
    }
}

fn decimal(value: i128, ty: &PrimitiveType) -> Option<Datum> {
    Datum::try_from_bytes(&value.to_be_bytes(), ty.clone()).ok()
}
