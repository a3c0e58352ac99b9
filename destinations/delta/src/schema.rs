//! Arrow ↔ Delta schemas: which Delta type a source column gets, and the Arrow schema the
//! table's data files are written with.

use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};

use crate::error::{DeltaError, Result};

/// The time zone Delta `timestamp` columns are read back in.
const UTC: &str = "UTC";

/// The Delta-storable Arrow type for a source column of type `dt` (`column` names it in
/// errors).
fn storable(column: &str, dt: &DataType) -> Result<DataType> {
    use DataType::*;
    let list = |f: &FieldRef| -> Result<DataType> {
        let element = storable(column, f.data_type())?;
        Ok(List(Arc::new(Field::new(
            "element",
            element,
            f.is_nullable(),
        ))))
    };
    Ok(match dt {
        Null => Utf8,
        Boolean | Int8 | Int16 | Int32 | Int64 | Float32 | Float64 | Utf8 | Binary | Date32 => {
            dt.clone()
        }
        UInt8 => Int16,
        UInt16 => Int32,
        UInt32 => Int64,
        UInt64 => Decimal128(20, 0),
        Float16 => Float32,
        LargeUtf8 | Utf8View => Utf8,
        LargeBinary | BinaryView | FixedSizeBinary(_) => Binary,
        Date64 => Date32,
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) => Decimal128(*p, *s),
        Decimal256(p, s) if *p <= 38 => Decimal128(*p, *s),
        // Delta `timestamp` is an instant in microseconds; `timestamp_ntz` a wall-clock time.
        Timestamp(_, Some(_)) => Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        Timestamp(_, None) => Timestamp(TimeUnit::Microsecond, None),
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) | FixedSizeList(f, _) => list(f)?,
        Struct(fields) => Struct(storable_fields(column, fields)?),
        Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(unsupported(column, dt));
            };
            Map(
                Arc::new(Field::new(
                    entries.name(),
                    Struct(storable_fields(column, kv)?),
                    false,
                )),
                *sorted,
            )
        }
        Dictionary(_, value) => storable(column, value)?,
        _ => return Err(unsupported(column, dt)),
    })
}

fn storable_fields(column: &str, fields: &Fields) -> Result<Fields> {
    fields
        .iter()
        .map(|f| {
            let dt = storable(&format!("{column}.{}", f.name()), f.data_type())?;
            Ok(Arc::new(Field::new(f.name(), dt, f.is_nullable())))
        })
        .collect()
}

fn unsupported(column: &str, dt: &DataType) -> DeltaError {
    DeltaError::Config(format!(
        "column `{column}` has type {dt}, which Delta Lake cannot store (no time-of-day, \
         duration or interval types); convert it in the source (e.g. column_types = \
         {{ {column} = \"string\" }})"
    ))
}

/// The source schema with every column converted to its Delta type (what evolution compares
/// with the table).
pub(crate) fn storable_schema(source: &Schema) -> Result<Schema> {
    let fields: Vec<Field> = source
        .fields()
        .iter()
        .map(|f| {
            Ok(Field::new(
                f.name(),
                storable(f.name(), f.data_type())?,
                f.is_nullable(),
            ))
        })
        .collect::<Result<_>>()?;
    Ok(Schema::new(fields))
}

/// An Arrow schema as a Delta schema.
pub(crate) fn to_kernel(schema: &Schema) -> Result<StructType> {
    schema
        .try_into_kernel()
        .map_err(|e| DeltaError::Config(format!("the schema has no Delta equivalent: {e}")))
}

/// The Arrow schema data files of a table with Delta schema `schema` are written with.
pub(crate) fn to_arrow(schema: &StructType) -> Result<SchemaRef> {
    let arrow: Schema = schema
        .try_into_arrow()
        .map_err(|e| DeltaError::Internal(format!("the table schema has no Arrow form: {e}")))?;
    Ok(Arc::new(arrow))
}

/// Whether Delta stores Arrow types `a` and `b` as the same type.
pub(crate) fn same_delta_type(a: &DataType, b: &DataType) -> bool {
    let kernel = |t: &DataType| -> Option<deltalake::kernel::DataType> {
        let t = storable("", t).ok()?;
        (&t).try_into_kernel().ok()
    };
    a == b || kernel(a).is_some_and(|ka| kernel(b).is_some_and(|kb| ka == kb))
}

/// Resolve `names` (case-insensitively, as Delta does) to the columns of `schema`.
pub(crate) fn resolve(schema: &Schema, names: &[String], what: &str) -> Result<Vec<usize>> {
    Ok(pipe_framework::columns::resolve(
        schema,
        names,
        what,
        "the table",
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_types_become_delta_types() {
        let source = Schema::new(vec![
            Field::new("u", DataType::UInt64, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into())),
                true,
            ),
            Field::new("s", DataType::LargeUtf8, false),
            Field::new_list("l", Field::new_list_field(DataType::Int32, true), true),
        ]);
        let kernel = to_kernel(&storable_schema(&source).expect("converts")).expect("kernel");
        let table = to_arrow(&kernel).expect("arrow");
        assert_eq!(table.field(0).data_type(), &DataType::Decimal128(20, 0));
        assert_eq!(
            table.field(1).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
        );
        assert_eq!(table.field(2).data_type(), &DataType::Utf8);
        assert!(!table.field(2).is_nullable());
        assert!(matches!(table.field(3).data_type(), DataType::List(f) if f.name() == "element"));
    }

    #[test]
    fn time_of_day_is_refused_with_the_column() {
        let source = Schema::new(vec![Field::new(
            "t",
            DataType::Time64(TimeUnit::Microsecond),
            true,
        )]);
        let err = storable_schema(&source).expect_err("refused").to_string();
        assert!(err.contains("`t`"), "{err}");
    }
}
