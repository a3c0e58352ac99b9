//! JSON Schema rules: a column's JSON text, or each whole row as a JSON object, validated
//! with the `jsonschema` crate. This is inherently per value (a JSON document each), so it
//! costs what JSON parsing costs; the other rules stay vectorized.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use pipe_framework::{Error, Result};

/// One JSON Schema rule, bound to a column (or to whole rows).
#[derive(Debug)]
pub(crate) struct JsonCheck {
    validator: Arc<jsonschema::Validator>,
    column: Option<usize>,
}

impl JsonCheck {
    pub(crate) fn new(validator: Arc<jsonschema::Validator>, column: Option<usize>) -> Self {
        Self { validator, column }
    }

    /// The rows that fail; for each, the reason (with the JSON pointer of the failing value)
    /// goes to `reasons`.
    pub(crate) fn evaluate(
        &self,
        batch: &RecordBatch,
        reasons: &mut HashMap<usize, String>,
    ) -> Result<Vec<bool>> {
        let mut mask = vec![false; batch.num_rows()];
        match self.column {
            Some(i) => {
                let name = batch.schema().field(i).name().clone();
                let text = arrow_cast::cast(batch.column(i), &DataType::Utf8)?;
                for (row, value) in text.as_string::<i32>().iter().enumerate() {
                    let Some(value) = value else { continue };
                    if let Some(why) = self.check(value.as_bytes()) {
                        mask[row] = true;
                        reasons.insert(row, format!("`{name}` {why}"));
                    }
                }
            }
            None => {
                let mut buf = Vec::with_capacity(batch.get_array_memory_size());
                {
                    let mut writer = arrow_json::LineDelimitedWriter::new(&mut buf);
                    writer.write(batch).map_err(|e| {
                        Error::user(format!("the rows cannot be written as JSON: {e}"))
                    })?;
                    writer.finish()?;
                }
                for (row, line) in buf
                    .split(|b| *b == b'\n')
                    .take(batch.num_rows())
                    .enumerate()
                {
                    if let Some(why) = self.check(line) {
                        mask[row] = true;
                        reasons.insert(row, format!("the row {why}"));
                    }
                }
            }
        }
        Ok(mask)
    }

    /// Why `json` fails the schema (its first error, with the pointer to the failing
    /// value), or `None` if it passes.
    fn check(&self, json: &[u8]) -> Option<String> {
        let value: serde_json::Value = match serde_json::from_slice(json) {
            Ok(v) => v,
            Err(e) => return Some(format!("is not JSON: {e}")),
        };
        let error = self.validator.iter_errors(&value).next()?;
        let pointer = error.instance_path().to_string();
        let pointer = if pointer.is_empty() {
            "/".to_string()
        } else {
            pointer
        };
        Some(format!("at {pointer}: {error}"))
    }
}
