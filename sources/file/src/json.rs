//! NDJSON: schema inference over the first lines and line-tracked decoding into Arrow.
//!
//! Lines are fed to arrow-json's decoder one batch at a time; when a batch fails, its lines
//! are decoded one by one to find the offending line, so errors name `file:line`. Fields not
//! in the schema are an error (strict mode), never silently dropped.

use std::io::BufRead;

use arrow_array::RecordBatch;
use arrow_json::reader::{Decoder, ReaderBuilder, infer_json_schema};
use arrow_schema::{ArrowError, Schema, SchemaRef};

use crate::error::FileError;

/// Infer a schema from the first `rows` lines.
pub(crate) fn infer(reader: impl BufRead, rows: usize, file: &str) -> Result<Schema, FileError> {
    infer_json_schema(reader, Some(rows.max(1)))
        .map(|(schema, _)| schema)
        .map_err(|e| FileError::Decode {
            file: file.to_string(),
            message: format!("cannot infer a schema: {e}"),
        })
}

fn decoder(schema: &SchemaRef, batch_rows: usize) -> Result<Decoder, ArrowError> {
    ReaderBuilder::new(schema.clone())
        .with_batch_size(batch_rows)
        .with_strict_mode(true)
        .build_decoder()
}

/// Decode all of `buf`, pushing every batch (the decoder stops at `batch_rows` rows, and a
/// line may hold more than one object, so one buffer can make several batches).
fn decode_all(
    decoder: &mut Decoder,
    buf: &[u8],
    out: &mut Vec<RecordBatch>,
) -> Result<(), ArrowError> {
    let mut offset = 0;
    while offset < buf.len() {
        let read = decoder.decode(&buf[offset..])?;
        offset += read;
        if offset < buf.len() {
            match decoder.flush()? {
                Some(batch) => out.push(batch),
                None if read == 0 => {
                    return Err(ArrowError::JsonError("the decoder made no progress".into()));
                }
                None => {}
            }
        }
    }
    if let Some(batch) = decoder.flush()? {
        out.push(batch);
    }
    Ok(())
}

/// Decode every line of `reader` into batches of `schema`.
pub(crate) fn read(
    mut reader: impl BufRead,
    schema: &SchemaRef,
    batch_rows: usize,
    file: &str,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), FileError> {
    let batch_rows = batch_rows.max(1);
    let io = |source| FileError::Io {
        file: file.to_string(),
        source,
    };
    let mut decoder = decoder(schema, batch_rows).map_err(|e| FileError::Decode {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    let mut buf: Vec<u8> = Vec::new();
    let mut first_line = 1u64;
    loop {
        buf.clear();
        let mut lines = 0usize;
        while lines < batch_rows {
            if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
                break;
            }
            lines += 1;
        }
        if lines == 0 {
            return Ok(());
        }
        let mut batches = Vec::new();
        if let Err(e) = decode_all(&mut decoder, &buf, &mut batches) {
            return Err(locate(schema, &buf, first_line, file, e));
        }
        for batch in batches {
            if !emit(batch) {
                return Ok(());
            }
        }
        first_line += lines as u64;
    }
}

/// Find the first line of `buf` that fails to decode on its own.
fn locate(
    schema: &SchemaRef,
    buf: &[u8],
    first_line: u64,
    file: &str,
    batch_error: ArrowError,
) -> FileError {
    for (i, line) in buf.split_inclusive(|b| *b == b'\n').enumerate() {
        let failed = decoder(schema, 1)
            .and_then(|mut d| decode_all(&mut d, line, &mut Vec::new()))
            .err();
        if let Some(e) = failed {
            return FileError::DecodeAt {
                file: file.to_string(),
                line: first_line + i as u64,
                message: clean(&e),
            };
        }
    }
    FileError::Decode {
        file: file.to_string(),
        message: clean(&batch_error),
    }
}

fn clean(e: &ArrowError) -> String {
    let s = e.to_string();
    s.strip_prefix("Json error: ").unwrap_or(&s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn errors_name_the_offending_line() {
        let text = "{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3}\n{\"a\": \"x\"}\n{\"a\": 5}\n";
        let schema = Arc::new(infer(&b"{\"a\": 1}\n"[..], 10, "f").expect("infers"));
        let err = read(text.as_bytes(), &schema, 2, "f.ndjson", &mut |_| true).expect_err("bad");
        let msg = err.to_string();
        assert!(msg.starts_with("f.ndjson:4: "), "{msg}");
    }

    #[test]
    fn unknown_fields_are_an_error_not_dropped() {
        let schema = Arc::new(infer(&b"{\"a\": 1}\n"[..], 10, "f").expect("infers"));
        let err = read(
            &b"{\"a\": 1}\n{\"a\": 2, \"b\": 3}\n"[..],
            &schema,
            10,
            "f",
            &mut |_| true,
        )
        .expect_err("strict");
        assert!(err.to_string().starts_with("f:2: "), "{err}");
    }

    /// Rows read from `text` (schema `{a: int64}`) in batches of `batch_rows`.
    fn count_rows(text: &[u8], batch_rows: usize) -> usize {
        let schema = Arc::new(infer(&b"{\"a\": 1}\n"[..], 10, "f").expect("infers"));
        let mut rows = 0;
        read(text, &schema, batch_rows, "f", &mut |b| {
            rows += b.num_rows();
            true
        })
        .expect("reads");
        rows
    }

    #[test]
    fn several_objects_on_one_line_are_all_read() {
        assert_eq!(
            count_rows(b"{\"a\": 1} {\"a\": 2} {\"a\": 3}\n{\"a\": 4}\n", 1),
            4
        );
    }

    #[test]
    fn reads_every_row() {
        assert_eq!(count_rows(b"{\"a\": 1}\n\n{\"a\": 2}\n{\"a\": null}", 2), 3);
    }
}
