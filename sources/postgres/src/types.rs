//! PostgreSQL column types → Arrow types.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, IntervalUnit, TimeUnit};

use crate::error::PgError;

/// Extension name Arrow uses for UUIDs (`FixedSizeBinary(16)`).
pub(crate) const UUID_EXTENSION: &str = "arrow.uuid";
/// Extension name Arrow uses for JSON text.
pub(crate) const JSON_EXTENSION: &str = "arrow.json";
const EXTENSION_KEY: &str = "ARROW:extension:name";

/// How one column is decoded from the binary COPY stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    /// `oid` and friends: an unsigned 32-bit value, read into Int64.
    Oid,
    Float4,
    Float8,
    /// `numeric(p,s)` (or an unconstrained one read as a decimal): exact, never rounded.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// `numeric` as its exact text.
    NumericText,
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Uuid,
    Json,
    /// `jsonb`: a version byte, then the JSON text.
    Jsonb,
    /// A user enum: its label, dictionary-encoded.
    Enum,
    /// A one-dimensional array.
    Array(Box<PgKind>),
}

/// A column as the catalog describes it.
#[derive(Debug, Clone)]
pub(crate) struct PgColumn {
    pub name: String,
    pub kind: PgKind,
    /// Read as `column::text` (unsupported type, `unsupported_types = "text"`).
    pub as_text: bool,
}

/// What the catalog says about one column's (base) type.
#[derive(Debug, Clone)]
pub(crate) struct TypeInfo {
    pub oid: u32,
    pub typmod: i32,
    /// `pg_type.typname`.
    pub name: String,
    /// `pg_type.typtype`: `b` base, `e` enum, ...
    pub typtype: String,
    /// For arrays: the element type.
    pub element: Option<Box<TypeInfo>>,
}

/// How `numeric` without precision is read (`unconstrained_numeric`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Unconstrained {
    Text,
    Error,
    Decimal(u8, i8),
}

impl Unconstrained {
    pub(crate) fn parse(s: &str) -> Result<Self, PgError> {
        match s {
            "string" | "text" => Ok(Self::Text),
            "error" => Ok(Self::Error),
            other => match pipe_framework::types::parse_type(other) {
                Ok(DataType::Decimal128(p, s)) => Ok(Self::Decimal(p, s)),
                _ => Err(PgError::Config(format!(
                    "`unconstrained_numeric` must be \"string\", \"error\" or \"decimal(p,s)\", got {other:?}"
                ))),
            },
        }
    }
}

/// The decoding kind of a type, or `None` if it has no Arrow mapping.
pub(crate) fn kind_of(
    t: &TypeInfo,
    unconstrained: Unconstrained,
) -> Result<Option<PgKind>, String> {
    if t.typtype == "e" {
        return Ok(Some(PgKind::Enum));
    }
    if let Some(elem) = &t.element {
        return Ok(kind_of(elem, unconstrained)?.map(|k| PgKind::Array(Box::new(k))));
    }
    Ok(Some(match t.oid {
        16 => PgKind::Bool,
        21 => PgKind::Int2,
        23 => PgKind::Int4,
        20 => PgKind::Int8,
        26 | 24 | 2202 | 2205 | 2206 | 3734 | 3769 | 4089 | 4096 => PgKind::Oid,
        700 => PgKind::Float4,
        701 => PgKind::Float8,
        1700 => numeric(t.typmod, unconstrained)?,
        25 | 1043 | 1042 | 19 | 18 => PgKind::Text,
        17 => PgKind::Bytea,
        1082 => PgKind::Date,
        1083 => PgKind::Time,
        1114 => PgKind::Timestamp,
        1184 => PgKind::Timestamptz,
        1186 => PgKind::Interval,
        2950 => PgKind::Uuid,
        114 => PgKind::Json,
        3802 => PgKind::Jsonb,
        _ if t.name == "citext" => PgKind::Text,
        _ => return Ok(None),
    }))
}

fn numeric(typmod: i32, unconstrained: Unconstrained) -> Result<PgKind, String> {
    if typmod >= 4 {
        let precision = ((typmod - 4) >> 16) & 0xffff;
        let scale = (typmod - 4) & 0xffff;
        // PostgreSQL allows scale > precision and negative scales (stored as 11-bit two's
        // complement); only the plain case maps to an Arrow decimal directly.
        if (1..=38).contains(&precision) && scale <= precision {
            return Ok(PgKind::Decimal {
                precision: precision as u8,
                scale: scale as i8,
            });
        }
    }
    match unconstrained {
        Unconstrained::Text => Ok(PgKind::NumericText),
        Unconstrained::Decimal(precision, scale) => Ok(PgKind::Decimal { precision, scale }),
        Unconstrained::Error => Err(
            "numeric without a precision pipe can store (or over 38 digits); set \
             `unconstrained_numeric` to \"string\" or \"decimal(p,s)\""
                .to_string(),
        ),
    }
}

/// The Arrow field for a column.
pub(crate) fn field(name: &str, kind: &PgKind) -> Field {
    let dt = data_type(kind);
    let field = Field::new(name, dt, true);
    match kind {
        PgKind::Uuid => with_extension(field, UUID_EXTENSION),
        PgKind::Json | PgKind::Jsonb => with_extension(field, JSON_EXTENSION),
        _ => field,
    }
}

fn with_extension(field: Field, name: &str) -> Field {
    field.with_metadata(HashMap::from([(
        EXTENSION_KEY.to_string(),
        name.to_string(),
    )]))
}

pub(crate) fn data_type(kind: &PgKind) -> DataType {
    match kind {
        PgKind::Bool => DataType::Boolean,
        PgKind::Int2 => DataType::Int16,
        PgKind::Int4 => DataType::Int32,
        PgKind::Int8 | PgKind::Oid => DataType::Int64,
        PgKind::Float4 => DataType::Float32,
        PgKind::Float8 => DataType::Float64,
        PgKind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
        PgKind::NumericText | PgKind::Text | PgKind::Json | PgKind::Jsonb => DataType::Utf8,
        PgKind::Bytea => DataType::Binary,
        PgKind::Date => DataType::Date32,
        PgKind::Time => DataType::Time64(TimeUnit::Microsecond),
        PgKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        PgKind::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        PgKind::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        PgKind::Uuid => DataType::FixedSizeBinary(16),
        PgKind::Enum => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        PgKind::Array(inner) => DataType::List(Arc::new(field("item", inner))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(oid: u32, typmod: i32) -> TypeInfo {
        TypeInfo {
            oid,
            typmod,
            name: String::new(),
            typtype: "b".into(),
            element: None,
        }
    }

    #[test]
    fn numeric_typmods_become_exact_decimals_or_follow_the_config() {
        // numeric(15,2): typmod = (15 << 16 | 2) + 4
        let k = kind_of(&info(1700, (15 << 16 | 2) + 4), Unconstrained::Error).expect("ok");
        assert_eq!(
            k,
            Some(PgKind::Decimal {
                precision: 15,
                scale: 2
            })
        );
        let k = kind_of(&info(1700, -1), Unconstrained::Text).expect("ok");
        assert_eq!(k, Some(PgKind::NumericText));
        assert!(kind_of(&info(1700, -1), Unconstrained::Error).is_err());
        let k = kind_of(
            &info(1700, (60 << 16 | 2) + 4),
            Unconstrained::Decimal(38, 10),
        );
        assert_eq!(
            k,
            Ok(Some(PgKind::Decimal {
                precision: 38,
                scale: 10
            }))
        );
    }

    #[test]
    fn arrays_and_enums_map_to_lists_and_dictionaries() {
        let arr = TypeInfo {
            element: Some(Box::new(info(23, -1))),
            ..info(1007, -1)
        };
        let k = kind_of(&arr, Unconstrained::Text)
            .expect("ok")
            .expect("mapped");
        assert!(matches!(data_type(&k), DataType::List(_)));
        let e = TypeInfo {
            typtype: "e".into(),
            ..info(90000, -1)
        };
        assert_eq!(kind_of(&e, Unconstrained::Text), Ok(Some(PgKind::Enum)));
        assert_eq!(
            kind_of(&info(600, -1), Unconstrained::Text),
            Ok(None),
            "point"
        );
    }
}
