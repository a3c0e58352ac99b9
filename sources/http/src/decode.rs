//! Records of one page → Arrow, with arrow-json's decoder against the run's schema.
//!
//! Each page is decoded on its own (so an error names the page and the record's byte offset)
//! and the page batches are coalesced into `batch_rows` batches downstream. Two things
//! arrow-json does not do are handled here:
//! - integer columns are decoded as text and cast exactly, because arrow-json truncates a
//!   fraction (`2.5` into int64 gives 2) where pipe must fail;
//! - JSON-text columns (type conflicts, or declared `json`): each record's value is rewritten
//!   into a JSON string literal of its text before decoding.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef};

use crate::scan::{self, ScanError};

/// Why a record did not decode.
#[derive(Debug)]
pub(crate) struct RecordError {
    /// 0-based index of the record in its page.
    pub record: usize,
    /// Byte offset of the record in the page body.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Decodes the records of pages into batches of one schema.
pub(crate) struct PageDecoder {
    target: SchemaRef,
    decode_schema: SchemaRef,
    json: Vec<String>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for PageDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageDecoder")
            .field("target", &self.target)
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

/// The type arrow-json decodes into: integers and decimals as text (cast exactly
/// afterwards: arrow-json truncates `2.5` into an integer and rounds extra decimal digits).
fn decode_type(t: &DataType) -> DataType {
    match t {
        t if t.is_integer() => DataType::Utf8,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => DataType::Utf8,
        DataType::List(f) => DataType::List(Arc::new(decode_field(f))),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(decode_field(f))),
        DataType::Struct(fields) => DataType::Struct(Fields::from(
            fields.iter().map(|f| decode_field(f)).collect::<Vec<_>>(),
        )),
        t => t.clone(),
    }
}

fn decode_field(f: &Field) -> Field {
    f.clone().with_data_type(decode_type(f.data_type()))
}

impl PageDecoder {
    pub(crate) fn new(target: SchemaRef, json: Vec<String>) -> Self {
        let decode_schema = Arc::new(Schema::new(
            target
                .fields()
                .iter()
                .map(|f| decode_field(f))
                .collect::<Vec<_>>(),
        ));
        Self {
            target,
            decode_schema,
            json,
            scratch: Vec::new(),
        }
    }

    fn decoder(&self, rows: usize) -> Result<Decoder, ArrowError> {
        ReaderBuilder::new(self.decode_schema.clone())
            .with_batch_size(rows.max(1))
            .with_strict_mode(true)
            .with_coerce_primitive(true)
            .build_decoder()
    }

    /// Decode the records at `spans` of `body` into one batch (`None` for no records).
    pub(crate) fn decode(
        &mut self,
        body: &[u8],
        spans: &[(usize, usize)],
    ) -> Result<Option<RecordBatch>, RecordError> {
        if spans.is_empty() {
            return Ok(None);
        }
        let whole = |message: String| RecordError {
            record: 0,
            offset: spans[0].0,
            message,
        };
        let mut decoder = self
            .decoder(spans.len())
            .map_err(|e| whole(e.to_string()))?;
        let mut failed = None;
        for (i, span) in spans.iter().enumerate() {
            if let Err(message) = self.feed(&mut decoder, &body[span.0..span.1]) {
                failed = Some((i, message));
                break;
            }
        }
        match failed {
            Some((record, message)) => Err(RecordError {
                record,
                offset: spans[record].0,
                message,
            }),
            None => decoder
                .flush()
                .map_err(|e| self.locate(body, spans, e))
                .and_then(|b| {
                    b.map(|b| self.cast(b))
                        .transpose()
                        .map_err(|e| self.locate(body, spans, e))
                }),
        }
    }

    fn feed(&mut self, decoder: &mut Decoder, record: &[u8]) -> Result<(), String> {
        let bytes = if self.json.is_empty() {
            record
        } else {
            self.scratch.clear();
            rewrite_json_fields(record, &self.json, &mut self.scratch)
                .map_err(|e| format!("{e} (of the record)"))?;
            &self.scratch
        };
        let first = scan::skip_ws(bytes, 0);
        if bytes.get(first) != Some(&b'{') {
            return Err("a record is not a JSON object".to_string());
        }
        let read = decoder.decode(bytes).map_err(|e| clean(&e))?;
        if read < bytes.len() {
            return Err("a record holds more than one JSON value".to_string());
        }
        Ok(())
    }

    /// Cast the decoded text of integer columns to the target types, exactly.
    fn cast(&self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        if self.decode_schema == self.target {
            return batch.with_schema(self.target.clone());
        }
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        let columns = batch
            .columns()
            .iter()
            .zip(self.target.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    check_exact(c, f.data_type())?;
                    cast_with_options(c, f.data_type(), &options)
                }
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        RecordBatch::try_new(self.target.clone(), columns)
    }

    /// Which record fails when decoded on its own.
    fn locate(&mut self, body: &[u8], spans: &[(usize, usize)], e: ArrowError) -> RecordError {
        for (i, span) in spans.iter().enumerate() {
            let alone = self.decoder(1).map_err(|e| clean(&e)).and_then(|mut d| {
                self.feed(&mut d, &body[span.0..span.1])?;
                let batch = d.flush().map_err(|e| clean(&e))?;
                match batch {
                    Some(b) => self.cast(b).map(|_| ()).map_err(|e| clean(&e)),
                    None => Ok(()),
                }
            });
            if let Err(message) = alone {
                return RecordError {
                    record: i,
                    offset: span.0,
                    message,
                };
            }
        }
        RecordError {
            record: 0,
            offset: spans[0].0,
            message: clean(&e),
        }
    }
}

/// Decimal text with more fractional digits than the type's scale (other than trailing
/// zeros) is an error: the cast would round it.
fn check_exact(decoded: &ArrayRef, target: &DataType) -> Result<(), ArrowError> {
    use arrow_array::cast::AsArray;
    let scale = match target {
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s) => *s,
        DataType::List(f) | DataType::LargeList(f) => {
            let values = match decoded.data_type() {
                DataType::List(_) => decoded.as_list::<i32>().values().clone(),
                DataType::LargeList(_) => decoded.as_list::<i64>().values().clone(),
                _ => return Ok(()),
            };
            return check_exact(&values, f.data_type());
        }
        DataType::Struct(fields) => {
            if let Some(s) = decoded.as_struct_opt() {
                for (column, f) in s.columns().iter().zip(fields) {
                    check_exact(column, f.data_type())?;
                }
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    let Some(text) = decoded.as_string_opt::<i32>() else {
        return Ok(());
    };
    let allowed = usize::try_from(scale).unwrap_or(0);
    for value in text.iter().flatten() {
        let Some((_, fraction)) = value.split_once('.') else {
            continue;
        };
        let digits = fraction.split(['e', 'E']).next().unwrap_or("");
        if digits.len() > allowed && digits[allowed..].bytes().any(|d| d != b'0') {
            return Err(ArrowError::CastError(format!(
                "{value} has more than {scale} decimal places: it would be rounded to fit \
                 {target}"
            )));
        }
    }
    Ok(())
}

fn clean(e: &ArrowError) -> String {
    let s = e.to_string();
    let s = s.strip_prefix("Json error: ").unwrap_or(&s);
    let s = s.strip_prefix("Cast error: ").unwrap_or(s);
    s.to_string()
}

/// Copy the object `record` into `out`, with the values of the fields named in `json`
/// (except `null`) replaced by a JSON string holding their JSON text.
fn rewrite_json_fields(record: &[u8], json: &[String], out: &mut Vec<u8>) -> Result<(), ScanError> {
    let at = scan::skip_ws(record, 0);
    if record.get(at) != Some(&b'{') {
        out.extend_from_slice(record);
        return Ok(());
    }
    let mut copied = 0;
    for (key, (start, end)) in scan::fields(record, at)? {
        let value = &record[start..end];
        if value != b"null" && json.iter().any(|n| scan::key_matches(key, n)) {
            out.extend_from_slice(&record[copied..start]);
            let text = std::str::from_utf8(value).map_err(|_| ScanError {
                offset: start,
                message: "invalid UTF-8".to_string(),
            })?;
            // Serializing a &str cannot fail.
            serde_json::to_writer(&mut *out, text).map_err(|e| ScanError {
                offset: start,
                message: e.to_string(),
            })?;
            copied = end;
        }
    }
    out.extend_from_slice(&record[copied..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    fn schema(fields: Vec<Field>) -> SchemaRef {
        Arc::new(Schema::new(fields))
    }

    fn spans(body: &str) -> Vec<(usize, usize)> {
        scan::elements(body.as_bytes(), 0).expect("array")
    }

    #[test]
    fn integers_are_exact_and_fractions_fail() {
        let s = schema(vec![Field::new("a", DataType::Int64, true)]);
        let mut d = PageDecoder::new(s, Vec::new());
        let body = r#"[{"a": 9007199254740993}, {"a": null}, {"a": -5}]"#;
        let batch = d
            .decode(body.as_bytes(), &spans(body))
            .expect("ok")
            .expect("rows");
        let a = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(a.value(0), 9_007_199_254_740_993);
        assert!(a.is_null(1));
        let body = r#"[{"a": 1}, {"a": 2.5}]"#;
        let e = d
            .decode(body.as_bytes(), &spans(body))
            .expect_err("fraction");
        assert_eq!((e.record, e.offset), (1, 11), "{e:?}");
    }

    #[test]
    fn decimals_are_never_rounded() {
        let s = schema(vec![Field::new("p", DataType::Decimal128(10, 2), true)]);
        let mut d = PageDecoder::new(s, Vec::new());
        let body = r#"[{"p": 1.25}, {"p": "3.10"}, {"p": 2.500}]"#;
        let batch = d
            .decode(body.as_bytes(), &spans(body))
            .expect("ok")
            .expect("rows");
        let p = batch
            .column(0)
            .as_primitive::<arrow_array::types::Decimal128Type>();
        assert_eq!(p.values().to_vec(), vec![125, 310, 250]);
        let body = r#"[{"p": 1.25}, {"p": 1.239}]"#;
        let e = d
            .decode(body.as_bytes(), &spans(body))
            .expect_err("rounding");
        assert_eq!(e.record, 1, "{e:?}");
        assert!(e.message.contains("decimal places"), "{}", e.message);
    }

    #[test]
    fn json_text_columns_keep_the_text() {
        let s = schema(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]);
        let mut d = PageDecoder::new(s, vec!["v".into()]);
        let body = r#"[{"id": 1, "v": {"x": [1, "a"]}}, {"v": "s", "id": 2}, {"id": 3, "v": null}, {"id": 4, "v": 7}]"#;
        let batch = d
            .decode(body.as_bytes(), &spans(body))
            .expect("ok")
            .expect("rows");
        let v = batch.column(1).as_string::<i32>();
        assert_eq!(v.value(0), r#"{"x": [1, "a"]}"#);
        assert_eq!(v.value(1), r#""s""#);
        assert!(v.is_null(2));
        assert_eq!(v.value(3), "7");
    }

    #[test]
    fn unknown_fields_are_an_error() {
        let s = schema(vec![Field::new("a", DataType::Int64, true)]);
        let mut d = PageDecoder::new(s, Vec::new());
        let body = r#"[{"a": 1}, {"a": 2, "b": 1}]"#;
        let e = d.decode(body.as_bytes(), &spans(body)).expect_err("strict");
        assert_eq!(e.record, 1);
        assert!(e.message.contains('b'), "{}", e.message);
    }
}
