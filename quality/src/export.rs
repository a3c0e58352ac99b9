//! `pipe contract export`: a contract as a JSON Schema (draft 2020-12) describing one row,
//! for tools that speak JSON Schema. Rules JSON Schema cannot express (uniqueness, keys, SQL
//! expressions, date bounds, row counts) are kept under `x-pipe-*` keys.

use serde_json::{Map, Value, json};

use crate::contract::Contract;
use crate::spec::Literal;
use crate::types::LogicalType;

fn literal(l: &Literal) -> Value {
    match l {
        Literal::Bool(b) => json!(b),
        Literal::Int(i) => json!(i),
        Literal::Float(x) => json!(x),
        Literal::Text(s) => json!(s),
        Literal::Datetime(d) => json!(d.to_string()),
    }
}

/// The contract's JSON Schema.
pub fn json_schema(contract: &Contract) -> Value {
    let spec = contract.spec();
    let mut properties = Map::new();
    let mut required: Vec<String> = spec
        .primary_key
        .iter()
        .map(|k| k.get_ref().clone())
        .collect();
    let mut unique = Vec::new();
    for c in &spec.columns {
        let name = c.name.get_ref().clone();
        let ty = c
            .data_type
            .as_ref()
            .and_then(|t| LogicalType::parse(t.get_ref()));
        let mut p = match &ty {
            Some(t) => t.json_schema(),
            None => json!({}),
        };
        let Some(obj) = p.as_object_mut() else {
            continue;
        };
        if let Some(d) = &c.description {
            obj.insert("description".into(), json!(d));
        }
        let numeric = matches!(
            ty,
            Some(LogicalType::Int { .. } | LogicalType::Float(_) | LogicalType::Decimal(..))
        );
        for (bound, key) in [(&c.min, "minimum"), (&c.max, "maximum")] {
            if let Some(b) = bound {
                let v = literal(b.get_ref());
                if numeric || (ty.is_none() && v.is_number()) {
                    obj.insert(key.into(), v);
                } else {
                    obj.insert(format!("x-pipe-{key}"), v);
                }
            }
        }
        if let Some(l) = &c.min_length {
            obj.insert("minLength".into(), json!(l.get_ref()));
        }
        if let Some(l) = &c.max_length {
            obj.insert("maxLength".into(), json!(l.get_ref()));
        }
        if let Some(pat) = &c.pattern {
            obj.insert("pattern".into(), json!(pat.get_ref()));
        }
        if let Some(values) = &c.allowed {
            let mut list: Vec<Value> = values.get_ref().iter().map(literal).collect();
            if !c.required {
                list.push(Value::Null);
            }
            obj.insert("enum".into(), Value::Array(list));
        }
        if let Some(p) = &c.precision {
            obj.insert("x-pipe-precision".into(), json!(p.get_ref()));
        }
        if let Some(s) = &c.scale {
            obj.insert("x-pipe-scale".into(), json!(s.get_ref()));
        }
        if let Some(j) = &c.json_schema {
            obj.insert("x-pipe-json-schema".into(), json!(j.get_ref()));
        }
        // A column that may be NULL may be null (or absent) in the row.
        if !c.required
            && let Some(Value::String(t)) = obj.get("type").cloned()
        {
            obj.insert("type".into(), json!([t, "null"]));
        }
        if c.required && !required.contains(&name) {
            required.push(name.clone());
        }
        if c.unique {
            unique.push(name.clone());
        }
        properties.insert(name, p);
    }
    let title = contract.file().path().file_stem().map_or_else(
        || "contract".to_string(),
        |s| s.to_string_lossy().to_string(),
    );
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": properties,
        "required": required,
    });
    let Some(obj) = schema.as_object_mut() else {
        return schema;
    };
    let mut put = |k: &str, v: Value| {
        obj.insert(k.to_string(), v);
    };
    if let Some(d) = &spec.description {
        put("description", json!(d));
    }
    if let Some(v) = &spec.version {
        put("x-pipe-version", json!(v.get_ref()));
    }
    if let Some(o) = &spec.owner {
        put("x-pipe-owner", json!(o));
    }
    if !spec.primary_key.is_empty() {
        put(
            "x-pipe-primary-key",
            json!(
                spec.primary_key
                    .iter()
                    .map(|k| k.get_ref())
                    .collect::<Vec<_>>()
            ),
        );
    }
    if !unique.is_empty() {
        put("x-pipe-unique", json!(unique));
    }
    if !spec.rules.is_empty() {
        put(
            "x-pipe-rules",
            Value::Array(
                spec.rules
                    .iter()
                    .map(
                        |r| json!({"name": r.name.get_ref(), "expression": r.expression.get_ref()}),
                    )
                    .collect(),
            ),
        );
    }
    if let Some(n) = &spec.min_rows {
        put("x-pipe-min-rows", json!(n.get_ref()));
    }
    if let Some(n) = &spec.max_rows {
        put("x-pipe-max-rows", json!(n.get_ref()));
    }
    if let Some(f) = &spec.freshness {
        put(
            "x-pipe-freshness",
            json!({"column": f.column.get_ref(), "max_age": f.max_age.get_ref()}),
        );
    }
    schema
}
