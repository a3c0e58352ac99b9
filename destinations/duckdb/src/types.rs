//! Arrow types → DuckDB column types, and SQL quoting.

use arrow_schema::DataType;

/// Quote an identifier for DuckDB.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote a string literal for DuckDB.
pub(crate) fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The DuckDB column type storing an Arrow type, as DuckDB spells it.
pub(crate) fn duck_type(dt: &DataType) -> Result<String, String> {
    use DataType::*;
    Ok(match dt {
        Null => "VARCHAR".into(),
        Boolean => "BOOLEAN".into(),
        Int8 => "TINYINT".into(),
        Int16 => "SMALLINT".into(),
        Int32 => "INTEGER".into(),
        Int64 => "BIGINT".into(),
        UInt8 => "UTINYINT".into(),
        UInt16 => "USMALLINT".into(),
        UInt32 => "UINTEGER".into(),
        UInt64 => "UBIGINT".into(),
        Float16 | Float32 => "FLOAT".into(),
        Float64 => "DOUBLE".into(),
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        Decimal256(p, s) if *p <= 38 => format!("DECIMAL({p},{s})"),
        Decimal256(p, _) => {
            return Err(format!(
                "decimal precision {p} exceeds DuckDB's maximum of 38"
            ));
        }
        Utf8 | LargeUtf8 | Utf8View => "VARCHAR".into(),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "BLOB".into(),
        Date32 | Date64 => "DATE".into(),
        Time32(_) | Time64(_) => "TIME".into(),
        Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        Timestamp(unit, None) => match unit {
            arrow_schema::TimeUnit::Second => "TIMESTAMP_S".into(),
            arrow_schema::TimeUnit::Millisecond => "TIMESTAMP_MS".into(),
            arrow_schema::TimeUnit::Microsecond => "TIMESTAMP".into(),
            arrow_schema::TimeUnit::Nanosecond => "TIMESTAMP_NS".into(),
        },
        Duration(_) | Interval(_) => "INTERVAL".into(),
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) => {
            format!("{}[]", duck_type(f.data_type())?)
        }
        FixedSizeList(f, n) => format!("{}[{n}]", duck_type(f.data_type())?),
        Struct(fields) => {
            let parts = fields
                .iter()
                .map(|f| Ok(format!("{} {}", ident(f.name()), duck_type(f.data_type())?)))
                .collect::<Result<Vec<_>, String>>()?;
            format!("STRUCT({})", parts.join(", "))
        }
        Map(entries, _) => match entries.data_type() {
            Struct(kv) if kv.len() == 2 => format!(
                "MAP({}, {})",
                duck_type(kv[0].data_type())?,
                duck_type(kv[1].data_type())?
            ),
            other => return Err(format!("unexpected map entries type {other}")),
        },
        Dictionary(_, value) => duck_type(value)?,
        RunEndEncoded(_, values) => duck_type(values.data_type())?,
        other => return Err(format!("Arrow type {other} has no DuckDB equivalent")),
    })
}

/// The DuckDB column type for a field: its Arrow type, or the extension type it carries
/// (`arrow.uuid` → `UUID`).
pub(crate) fn duck_field_type(field: &arrow_schema::Field) -> Result<String, String> {
    match (field.extension_type_name(), field.data_type()) {
        (Some("arrow.uuid"), DataType::FixedSizeBinary(16)) => Ok("UUID".into()),
        (_, DataType::List(item) | DataType::LargeList(item)) => {
            Ok(format!("{}[]", duck_field_type(item)?))
        }
        _ => duck_type(field.data_type()),
    }
}

/// Whether DuckDB stores the two Arrow types as the same column type.
pub(crate) fn same_type(a: &DataType, b: &DataType) -> bool {
    matches!((duck_type(a), duck_type(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_schema::{Field, Fields, TimeUnit};

    #[test]
    fn maps_nested_and_temporal_types() {
        let dt = DataType::Struct(Fields::from(vec![
            Field::new("a", DataType::Decimal128(38, 10), true),
            Field::new_list("tags", Field::new("item", DataType::Utf8, true), true),
        ]));
        assert_eq!(
            duck_type(&dt).as_deref(),
            Ok("STRUCT(\"a\" DECIMAL(38,10), \"tags\" VARCHAR[])")
        );
        assert_eq!(
            duck_type(&DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some(Arc::from("+02:00"))
            ))
            .as_deref(),
            Ok("TIMESTAMP WITH TIME ZONE")
        );
        assert!(same_type(&DataType::Utf8View, &DataType::Utf8));
        assert!(!same_type(&DataType::Int32, &DataType::Int64));
    }

    #[test]
    fn quotes_identifiers_and_literals() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal("o'brien"), "'o''brien'");
    }
}
