//! The logical types a contract may declare (`type = "decimal(15,2)"`), how the data's Arrow
//! types map to them, and which changes widen a type losslessly.

use std::fmt;

use arrow_schema::{DataType, Field};

/// A column type as a contract states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalType {
    /// Only NULLs (an inferred all-NULL column); fits any declared type.
    Null,
    /// `bool`.
    Bool,
    /// `int8` … `int64`, `uint8` … `uint64`.
    Int {
        /// 8, 16, 32 or 64.
        bits: u8,
        /// `int` or `uint`.
        signed: bool,
    },
    /// `float32`, `float64`.
    Float(u8),
    /// `decimal(p,s)`.
    Decimal(u8, i8),
    /// `string`.
    String,
    /// `json`: JSON text.
    Json,
    /// `binary`.
    Binary,
    /// `uuid`.
    Uuid,
    /// `date`.
    Date,
    /// `time`.
    Time,
    /// `timestamp` (no time zone).
    Timestamp,
    /// `timestamptz` (UTC instants).
    Timestamptz,
    /// `interval`.
    Interval,
    /// `list<T>`.
    List(Box<LogicalType>),
    /// `struct`.
    Struct,
    /// `map`.
    Map,
}

/// The spellings `parse` knows, for error messages.
pub(crate) const KNOWN: &str = "bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, \
    float32, float64, decimal(p,s), string, json, binary, uuid, date, time, timestamp, \
    timestamptz, interval, list<T>, struct, map";

impl LogicalType {
    /// Parse a declared type; `None` if unknown.
    pub fn parse(s: &str) -> Option<Self> {
        let t = s.trim().to_ascii_lowercase();
        if let Some(inner) = t.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
            return Self::parse(inner).map(|i| Self::List(Box::new(i)));
        }
        if let Some(args) = t.strip_prefix("decimal(").and_then(|r| r.strip_suffix(')')) {
            let (p, s) = args.split_once(',')?;
            let (p, s): (u8, i8) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
            return ((1..=76).contains(&p) && s >= 0 && (s as u8) <= p)
                .then_some(Self::Decimal(p, s));
        }
        let int = |bits, signed| Some(Self::Int { bits, signed });
        match t.as_str() {
            "bool" | "boolean" => Some(Self::Bool),
            "int8" | "tinyint" => int(8, true),
            "int16" | "smallint" => int(16, true),
            "int32" | "int" | "integer" => int(32, true),
            "int64" | "bigint" | "long" => int(64, true),
            "uint8" => int(8, false),
            "uint16" => int(16, false),
            "uint32" => int(32, false),
            "uint64" => int(64, false),
            "float32" | "float" | "real" => Some(Self::Float(32)),
            "float64" | "double" => Some(Self::Float(64)),
            "string" | "text" | "varchar" => Some(Self::String),
            "json" => Some(Self::Json),
            "binary" | "bytes" => Some(Self::Binary),
            "uuid" => Some(Self::Uuid),
            "date" => Some(Self::Date),
            "time" => Some(Self::Time),
            "timestamp" => Some(Self::Timestamp),
            "timestamptz" => Some(Self::Timestamptz),
            "interval" => Some(Self::Interval),
            "struct" => Some(Self::Struct),
            "map" => Some(Self::Map),
            _ => None,
        }
    }

    /// The logical type of an Arrow field (extension types `arrow.uuid` and `arrow.json`
    /// included).
    pub fn of_field(field: &Field) -> Self {
        match field
            .metadata()
            .get("ARROW:extension:name")
            .map(String::as_str)
        {
            Some("arrow.uuid") => return Self::Uuid,
            Some("arrow.json") => return Self::Json,
            _ => {}
        }
        Self::of_type(field.data_type())
    }

    fn of_type(t: &DataType) -> Self {
        use DataType as D;
        let int = |bits, signed| Self::Int { bits, signed };
        match t {
            D::Null => Self::Null,
            D::Boolean => Self::Bool,
            D::Int8 => int(8, true),
            D::Int16 => int(16, true),
            D::Int32 => int(32, true),
            D::Int64 => int(64, true),
            D::UInt8 => int(8, false),
            D::UInt16 => int(16, false),
            D::UInt32 => int(32, false),
            D::UInt64 => int(64, false),
            D::Float16 | D::Float32 => Self::Float(32),
            D::Float64 => Self::Float(64),
            D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) | D::Decimal256(p, s) => {
                Self::Decimal(*p, *s)
            }
            D::Utf8 | D::LargeUtf8 | D::Utf8View => Self::String,
            D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => Self::Binary,
            D::Date32 | D::Date64 => Self::Date,
            D::Time32(_) | D::Time64(_) => Self::Time,
            D::Timestamp(_, None) => Self::Timestamp,
            D::Timestamp(_, Some(_)) => Self::Timestamptz,
            D::Interval(_) | D::Duration(_) => Self::Interval,
            D::List(f) | D::LargeList(f) | D::ListView(f) | D::LargeListView(f) => {
                Self::List(Box::new(Self::of_field(f)))
            }
            D::FixedSizeList(f, _) => Self::List(Box::new(Self::of_field(f))),
            D::Map(..) => Self::Map,
            D::Dictionary(_, v) => Self::of_type(v),
            D::RunEndEncoded(_, v) => Self::of_field(v),
            _ => Self::Struct,
        }
    }

    /// Whether every value of `self` is exactly a value of `to` (a lossless widening, or
    /// the same type).
    pub fn widens_to(&self, to: &LogicalType) -> bool {
        use LogicalType as L;
        match (self, to) {
            (a, b) if a == b => true,
            (L::Null, _) => true,
            (
                L::Int {
                    bits: a,
                    signed: sa,
                },
                L::Int {
                    bits: b,
                    signed: sb,
                },
            ) => match (sa, sb) {
                (true, true) | (false, false) => a <= b,
                (false, true) => a < b,
                (true, false) => false,
            },
            (L::Int { bits, .. }, L::Float(f)) => *bits <= if *f == 64 { 32 } else { 16 },
            (L::Int { bits, signed }, L::Decimal(p, s)) => {
                let digits: i16 = match (bits, signed) {
                    (8, _) => 3,
                    (16, _) => 5,
                    (32, _) => 10,
                    (_, true) => 19,
                    (_, false) => 20,
                };
                i16::from(*p) - i16::from(*s) >= digits
            }
            (L::Float(a), L::Float(b)) => a <= b,
            (L::Decimal(p1, s1), L::Decimal(p2, s2)) => {
                s2 >= s1 && i16::from(*p2) - i16::from(*s2) >= i16::from(*p1) - i16::from(*s1)
            }
            (L::Json, L::String) => true,
            (L::List(a), L::List(b)) => a.widens_to(b),
            _ => false,
        }
    }

    /// Its JSON Schema (for `pipe contract export`).
    pub fn json_schema(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            LogicalType::Null => json!({}),
            LogicalType::Bool => json!({"type": "boolean"}),
            LogicalType::Int { .. } => json!({"type": "integer"}),
            LogicalType::Float(_) | LogicalType::Decimal(..) => json!({"type": "number"}),
            LogicalType::String | LogicalType::Json | LogicalType::Binary => {
                json!({"type": "string"})
            }
            LogicalType::Uuid => json!({"type": "string", "format": "uuid"}),
            LogicalType::Date => json!({"type": "string", "format": "date"}),
            LogicalType::Time => json!({"type": "string", "format": "time"}),
            LogicalType::Timestamp | LogicalType::Timestamptz => {
                json!({"type": "string", "format": "date-time"})
            }
            LogicalType::Interval => json!({"type": "string"}),
            LogicalType::List(inner) => json!({"type": "array", "items": inner.json_schema()}),
            LogicalType::Struct | LogicalType::Map => json!({"type": "object"}),
        }
    }
}

impl fmt::Display for LogicalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogicalType::Null => f.write_str("null"),
            LogicalType::Bool => f.write_str("bool"),
            LogicalType::Int { bits, signed } => {
                write!(f, "{}int{bits}", if *signed { "" } else { "u" })
            }
            LogicalType::Float(b) => write!(f, "float{b}"),
            LogicalType::Decimal(p, s) => write!(f, "decimal({p},{s})"),
            LogicalType::String => f.write_str("string"),
            LogicalType::Json => f.write_str("json"),
            LogicalType::Binary => f.write_str("binary"),
            LogicalType::Uuid => f.write_str("uuid"),
            LogicalType::Date => f.write_str("date"),
            LogicalType::Time => f.write_str("time"),
            LogicalType::Timestamp => f.write_str("timestamp"),
            LogicalType::Timestamptz => f.write_str("timestamptz"),
            LogicalType::Interval => f.write_str("interval"),
            LogicalType::List(i) => write!(f, "list<{i}>"),
            LogicalType::Struct => f.write_str("struct"),
            LogicalType::Map => f.write_str("map"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> LogicalType {
        LogicalType::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn widening_is_lossless_only() {
        assert!(t("int32").widens_to(&t("int64")));
        assert!(!t("int64").widens_to(&t("int32")));
        assert!(t("uint32").widens_to(&t("int64")));
        assert!(!t("uint64").widens_to(&t("int64")));
        assert!(t("int32").widens_to(&t("float64")));
        assert!(!t("int64").widens_to(&t("float64")));
        assert!(t("decimal(10,2)").widens_to(&t("decimal(12,2)")));
        assert!(!t("decimal(10,2)").widens_to(&t("decimal(10,3)")));
        assert!(t("int32").widens_to(&t("decimal(12,2)")));
        assert!(t("list<int32>").widens_to(&t("list<int64>")));
        assert!(!t("string").widens_to(&t("json")));
        assert!(LogicalType::parse("decimal(3,4)").is_none());
        assert_eq!(t("DECIMAL(15, 2)").to_string(), "decimal(15,2)");
    }
}
