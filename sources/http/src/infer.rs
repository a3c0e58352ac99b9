//! Schema inference from sample records, with documented rules (docs/http-source.md):
//!
//! - `true`/`false` → bool; integers → int64; other numbers (and integers beyond int64) →
//!   float64; a field seen as both integer and float → float64;
//! - strings → string (no guessing of dates: declare them in `column_types`);
//! - objects → struct (the union of the fields seen, in first-seen order);
//! - arrays → list of the merged element type;
//! - a field seen only as `null` (or `[]`, `{}`) → string;
//! - any other conflict (string vs number, object vs array, ...) anywhere inside a top-level
//!   field → that top-level field is stored as its JSON text (string), never dropped.
//!
//! Every column is nullable. Types come from the byte scanner over the records of the sample
//! (the first `infer_pages` pages), keeping the fields' order; the data path decodes with
//! arrow-json.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema};

use crate::scan::{self, ScanError};

/// What a JSON value's type is, merged over every value seen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Str,
    Struct(Vec<(String, Kind)>),
    List(Box<Kind>),
    /// Conflicting types: kept as JSON text.
    Json,
}

impl Kind {
    /// The kind of the value at `span` of `b` (already checked by the scanner).
    fn of_raw(b: &[u8], span: (usize, usize)) -> Result<Kind, ScanError> {
        let (start, end) = span;
        Ok(match b.get(start) {
            Some(b'n') => Kind::Null,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'"') => Kind::Str,
            Some(b'{') => {
                let mut fields: Vec<(String, Kind)> = Vec::new();
                for (key, value) in scan::fields(b, start)? {
                    let name = key_text(key).ok_or_else(|| ScanError {
                        offset: start,
                        message: "a field name is not valid JSON text".to_string(),
                    })?;
                    let kind = Kind::of_raw(b, value)?;
                    merge_field(&mut fields, name, kind);
                }
                Kind::Struct(fields)
            }
            Some(b'[') => scan::elements(b, start)?
                .into_iter()
                .try_fold(Kind::Null, |k, e| Ok(k.merge(Kind::of_raw(b, e)?)))?,
            _ => {
                let text = &b[start..end];
                let integral = !text.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
                let fits = std::str::from_utf8(text).is_ok_and(|t| t.parse::<i64>().is_ok());
                if integral && fits {
                    Kind::Int
                } else {
                    Kind::Float
                }
            }
        })
        .map(|k| match (b.get(start), k) {
            (Some(b'['), k) => Kind::List(Box::new(k)),
            (_, k) => k,
        })
    }

    fn merge(self, other: Kind) -> Kind {
        match (self, other) {
            (Kind::Null, k) | (k, Kind::Null) => k,
            (Kind::Json, _) | (_, Kind::Json) => Kind::Json,
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
            (Kind::List(a), Kind::List(b)) => Kind::List(Box::new(a.merge(*b))),
            (Kind::Struct(mut a), Kind::Struct(b)) => {
                for (name, kind) in b {
                    merge_field(&mut a, name, kind);
                }
                Kind::Struct(a)
            }
            (a, b) if a == b => a,
            _ => Kind::Json,
        }
    }

    fn has_conflict(&self) -> bool {
        match self {
            Kind::Json => true,
            Kind::List(k) => k.has_conflict(),
            // An object only ever seen empty has no columns to decode into.
            Kind::Struct(fields) => {
                fields.is_empty() || fields.iter().any(|(_, k)| k.has_conflict())
            }
            _ => false,
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Kind::Null | Kind::Str | Kind::Json => DataType::Utf8,
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::List(k) => DataType::new_list(k.data_type(), true),
            Kind::Struct(fields) => DataType::Struct(Fields::from(
                fields
                    .iter()
                    .map(|(n, k)| Field::new(n, k.data_type(), true))
                    .collect::<Vec<_>>(),
            )),
        }
    }
}

/// Merge `kind` into the field `name` of `fields` (added at the end if new).
fn merge_field(fields: &mut Vec<(String, Kind)>, name: String, kind: Kind) {
    match fields.iter_mut().find(|(n, _)| *n == name) {
        Some((_, existing)) => *existing = std::mem::replace(existing, Kind::Null).merge(kind),
        None => fields.push((name, kind)),
    }
}

/// A raw (still escaped) field name as text.
fn key_text(raw: &[u8]) -> Option<String> {
    if raw.contains(&b'\\') {
        let mut quoted = Vec::with_capacity(raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(raw);
        quoted.push(b'"');
        serde_json::from_slice(&quoted).ok()
    } else {
        String::from_utf8(raw.to_vec()).ok()
    }
}

/// Merges the records of the sample into top-level column kinds.
#[derive(Debug, Default)]
pub(crate) struct Inference {
    columns: Vec<(String, Kind)>,
    /// Records seen.
    pub records: usize,
}

impl Inference {
    /// Add the record at `span` of `b`: a JSON object, else an error to report.
    pub(crate) fn add(&mut self, b: &[u8], span: (usize, usize)) -> Result<(), String> {
        let Kind::Struct(fields) = Kind::of_raw(b, span).map_err(|e| e.to_string())? else {
            return Err("a record is not a JSON object".to_string());
        };
        self.records += 1;
        for (name, kind) in fields {
            merge_field(&mut self.columns, name, kind);
        }
        Ok(())
    }

    /// The schema, and the names of the columns kept as JSON text (a conflict anywhere
    /// inside, or an object only ever seen empty).
    pub(crate) fn finish(self) -> (Schema, Vec<String>) {
        let mut json = Vec::new();
        let fields: Vec<Field> = self
            .columns
            .into_iter()
            .map(|(name, kind)| {
                if kind.has_conflict() {
                    json.push(name.clone());
                    Field::new(name, DataType::Utf8, true)
                } else {
                    Field::new(name, kind.data_type(), true)
                }
            })
            .collect();
        (Schema::new(fields), json)
    }
}

/// The schema as the user declared parts of it: `overrides` replace inferred types by
/// column name (the type `json` keeps a column as JSON text).
pub(crate) fn apply_overrides(
    schema: Schema,
    json: &mut Vec<String>,
    overrides: &[(String, Option<DataType>)],
) -> Schema {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (name, ty) in overrides {
        let data_type = ty.clone().unwrap_or(DataType::Utf8);
        json.retain(|n| n != name);
        if ty.is_none() {
            json.push(name.clone());
        }
        match fields.iter_mut().find(|f| f.name() == name) {
            Some(f) => *f = Field::new(name, data_type, true),
            None => fields.push(Field::new(name, data_type, true)),
        }
    }
    Schema::new(fields)
}

/// A schema of one nullable field per `(name, type)`.
pub(crate) fn declared(columns: &[(String, Option<DataType>)]) -> (Arc<Schema>, Vec<String>) {
    let json = columns
        .iter()
        .filter(|(_, t)| t.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, t)| Field::new(n, t.clone().unwrap_or(DataType::Utf8), true))
        .collect();
    (Arc::new(Schema::new(fields)), json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(records: &[&str]) -> (Schema, Vec<String>) {
        let mut inference = Inference::default();
        for r in records {
            let at = scan::skip_ws(r.as_bytes(), 0);
            let end = scan::skip_value(r.as_bytes(), at).expect("json");
            inference.add(r.as_bytes(), (at, end)).expect("object");
        }
        inference.finish()
    }

    #[test]
    fn rules() {
        let (_, json) = infer(&[r#"{"a": {"b": {}}, "c": [{}], "d": {}}"#]);
        assert_eq!(
            json,
            ["a", "c", "d"],
            "objects only seen empty are JSON text"
        );
        let (schema, json) = infer(&[
            r#"{"id": 1, "price": 2, "tags": ["a"], "addr": {"city": "x"}, "n": null, "mixed": 1, "deep": {"v": 1}}"#,
            r#"{"id": 2, "price": 2.5, "tags": [], "addr": {"zip": "1"}, "mixed": "one", "deep": {"v": "x"}, "late": true}"#,
        ]);
        let ty = |n: &str| schema.field_with_name(n).expect(n).data_type().clone();
        assert_eq!(ty("id"), DataType::Int64);
        assert_eq!(ty("price"), DataType::Float64);
        assert_eq!(ty("tags"), DataType::new_list(DataType::Utf8, true));
        assert_eq!(
            ty("addr"),
            DataType::Struct(Fields::from(vec![
                Field::new("city", DataType::Utf8, true),
                Field::new("zip", DataType::Utf8, true),
            ]))
        );
        assert_eq!(ty("n"), DataType::Utf8);
        assert_eq!(ty("late"), DataType::Boolean);
        assert_eq!(json, vec!["mixed".to_string(), "deep".to_string()]);
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(
            names,
            ["id", "price", "tags", "addr", "n", "mixed", "deep", "late"]
        );
    }

    #[test]
    fn big_integers_are_floats() {
        let (schema, _) = infer(&[r#"{"a": 18446744073709551615}"#]);
        assert_eq!(schema.field(0).data_type(), &DataType::Float64);
    }
}
