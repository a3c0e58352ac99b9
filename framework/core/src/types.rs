//! Type names in configuration files (`decimal(38,10)`, `timestamptz`, `list<int64>`,
//! `struct<a: int32, b: string>`) ↔ Arrow data types.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, IntervalUnit, TimeUnit};

use crate::error::{Error, Result};

/// The names [`parse_type`] understands, for error messages and docs.
pub const TYPE_NAMES: &str = "bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, \
    float32, float64, decimal(p,s), string, binary, date, time, timestamp[(unit)], \
    timestamptz[(unit)], interval, list<T>, struct<name: T, ...>";

/// Parse a type name. Case-insensitive; common SQL spellings are accepted (`bigint`,
/// `double`, `varchar`, `numeric(p,s)`, `T[]`).
pub fn parse_type(input: &str) -> Result<DataType> {
    let mut p = Parser {
        s: input.as_bytes(),
        pos: 0,
        input,
    };
    let t = p.ty()?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("unexpected trailing text"));
    }
    Ok(t)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    input: &'a str,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> Error {
        Error::user(format!(
            "invalid type `{}` ({what} at position {}); known types: {TYPE_NAMES}",
            self.input,
            self.pos + 1
        ))
    }

    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", c as char)))
        }
    }

    fn word(&mut self) -> String {
        self.ws();
        let start = self.pos;
        while self.pos < self.s.len()
            && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
        {
            self.pos += 1;
        }
        self.input[start..self.pos].to_ascii_lowercase()
    }

    fn number(&mut self) -> Result<u32> {
        let w = self.word();
        w.parse().map_err(|_| self.err("expected a number"))
    }

    fn ty(&mut self) -> Result<DataType> {
        let mut t = self.base()?;
        while self.eat(b'[') {
            self.expect(b']')?;
            t = DataType::List(Arc::new(Field::new("item", t, true)));
        }
        Ok(t)
    }

    fn unit(&mut self) -> Result<TimeUnit> {
        match self.word().as_str() {
            "s" => Ok(TimeUnit::Second),
            "ms" => Ok(TimeUnit::Millisecond),
            "us" => Ok(TimeUnit::Microsecond),
            "ns" => Ok(TimeUnit::Nanosecond),
            _ => Err(self.err("expected a time unit s, ms, us or ns")),
        }
    }

    fn base(&mut self) -> Result<DataType> {
        let name = self.word();
        let t = match name.as_str() {
            "bool" | "boolean" => DataType::Boolean,
            "int8" | "tinyint" => DataType::Int8,
            "int16" | "smallint" => DataType::Int16,
            "int32" | "int" | "integer" => DataType::Int32,
            "int64" | "bigint" | "long" => DataType::Int64,
            "uint8" => DataType::UInt8,
            "uint16" => DataType::UInt16,
            "uint32" => DataType::UInt32,
            "uint64" => DataType::UInt64,
            "float32" | "float" | "real" => DataType::Float32,
            "float64" | "double" => DataType::Float64,
            "string" | "utf8" | "text" | "varchar" => DataType::Utf8,
            "binary" | "bytes" | "blob" | "bytea" => DataType::Binary,
            "date" | "date32" => DataType::Date32,
            "time" => DataType::Time64(TimeUnit::Microsecond),
            "interval" => DataType::Interval(IntervalUnit::MonthDayNano),
            "decimal" | "numeric" => {
                self.expect(b'(')?;
                let p = self.number()?;
                let s = if self.eat(b',') { self.number()? } else { 0 };
                self.expect(b')')?;
                if !(1..=38).contains(&p) || s > p {
                    return Err(
                        self.err("decimal needs 1 <= precision <= 38 and scale <= precision")
                    );
                }
                DataType::Decimal128(p as u8, s as i8)
            }
            "timestamp" | "timestamptz" => {
                let mut unit = TimeUnit::Microsecond;
                let mut tz: Option<Arc<str>> = (name == "timestamptz").then(|| "UTC".into());
                if self.eat(b'(') {
                    unit = self.unit()?;
                    if self.eat(b',') {
                        self.ws();
                        let start = self.pos;
                        while self.pos < self.s.len() && self.s[self.pos] != b')' {
                            self.pos += 1;
                        }
                        tz = Some(self.input[start..self.pos].trim().into());
                    }
                    self.expect(b')')?;
                }
                DataType::Timestamp(unit, tz)
            }
            "list" | "array" => {
                self.expect(b'<')?;
                let item = self.ty()?;
                self.expect(b'>')?;
                DataType::List(Arc::new(Field::new("item", item, true)))
            }
            "struct" => {
                self.expect(b'<')?;
                let mut fields = Vec::new();
                loop {
                    let fname = {
                        self.ws();
                        let start = self.pos;
                        while self.pos < self.s.len() && !b":,<>".contains(&self.s[self.pos]) {
                            self.pos += 1;
                        }
                        self.input[start..self.pos].trim().to_string()
                    };
                    if fname.is_empty() {
                        return Err(self.err("expected a field name"));
                    }
                    self.expect(b':')?;
                    fields.push(Field::new(fname, self.ty()?, true));
                    if !self.eat(b',') {
                        break;
                    }
                }
                self.expect(b'>')?;
                DataType::Struct(Fields::from(fields))
            }
            "" => return Err(self.err("expected a type name")),
            _ => return Err(self.err("unknown type")),
        };
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scalars_and_sql_spellings() {
        assert_eq!(parse_type("BIGINT").ok(), Some(DataType::Int64));
        assert_eq!(
            parse_type("decimal(38, 10)").ok(),
            Some(DataType::Decimal128(38, 10))
        );
        assert_eq!(
            parse_type("timestamptz").ok(),
            Some(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            ))
        );
        assert_eq!(
            parse_type("timestamp(ns)").ok(),
            Some(DataType::Timestamp(TimeUnit::Nanosecond, None))
        );
    }

    #[test]
    fn parses_nested_types() {
        let t = parse_type("struct<a: int32, tags: list<string>>").expect("parses");
        let DataType::Struct(fields) = t else {
            panic!("not a struct")
        };
        assert_eq!(fields.len(), 2);
        assert!(matches!(fields[1].data_type(), DataType::List(_)));
        assert!(matches!(parse_type("int64[]"), Ok(DataType::List(_))));
    }

    #[test]
    fn unknown_types_are_a_clear_error() {
        let err = parse_type("decimal(40,2)").expect_err("too wide");
        assert!(err.message().contains("precision <= 38"), "{err:?}");
        let err = parse_type("integr").expect_err("typo");
        assert!(err.message().contains("unknown type"), "{err:?}");
    }
}
