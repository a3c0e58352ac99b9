//! CSV: the dialect of `[source.csv]`, schema inference over the first records, and
//! streaming decode into Arrow batches.
//!
//! pipe tokenizes CSV itself (`tokenize.rs`) instead of using arrow-csv, whose tokenizer does
//! not report whether a field was quoted (apache/arrow-rs#6874). Quoting decides NULL: only
//! an *unquoted* field equal to a null marker is NULL, a quoted one is always its text
//! (`a,"",b` has an empty string in the middle), as PostgreSQL's `COPY … CSV`, DuckDB
//! (`allow_quoted_nulls = false`) and pyarrow (`quoted_strings_can_be_null = False`) read it.
//! The tokenizer also reports physical lines, unterminated quotes and oversized records.

mod decode;
mod infer;
mod tokenize;

use std::io::BufRead;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::config::CsvOptions;
use crate::error::FileError;

use decode::NullMarkers;
use tokenize::{Records, Syntax, TokenError, Tokenizer};

/// The parsed dialect of `[source.csv]`.
#[derive(Debug, Clone)]
pub(crate) struct Dialect {
    header: bool,
    syntax: Syntax,
    nulls: NullMarkers,
}

fn one_byte(key: &str, value: &str) -> Result<u8, FileError> {
    let unescaped = match value {
        "\\t" => "\t",
        other => other,
    };
    match unescaped.as_bytes() {
        [b] if b.is_ascii() && !matches!(b, b'\n' | b'\r') => Ok(*b),
        _ => Err(FileError::Config(format!(
            "`csv.{key}` must be a single ASCII character other than a line end, got {value:?}"
        ))),
    }
}

impl Dialect {
    /// Validate the options; `tab_default` for `.tsv` files.
    pub(crate) fn new(opts: &CsvOptions, tab_default: bool) -> Result<Self, FileError> {
        let delimiter = match &opts.delimiter {
            Some(d) => one_byte("delimiter", d)?,
            None if tab_default => b'\t',
            None => b',',
        };
        let quote = one_byte("quote", &opts.quote)?;
        let escape = opts
            .escape
            .as_deref()
            .map(|e| one_byte("escape", e))
            .transpose()?;
        let comment = opts
            .comment
            .as_deref()
            .map(|c| one_byte("comment", c))
            .transpose()?;
        if delimiter == quote {
            return Err(FileError::Config(
                "`csv.delimiter` and `csv.quote` must differ".into(),
            ));
        }
        let max_record_bytes = usize::try_from(opts.max_record_mb)
            .unwrap_or(usize::MAX >> 20)
            .saturating_mul(1 << 20);
        Ok(Self {
            header: opts.header,
            syntax: Syntax {
                delimiter,
                quote,
                escape,
                comment,
                max_record_bytes,
            },
            nulls: NullMarkers::new(&opts.null_values),
        })
    }

    /// Infer column names and types from the first `rows` records.
    pub(crate) fn infer(
        &self,
        reader: impl BufRead,
        rows: usize,
        file: &str,
    ) -> Result<Schema, FileError> {
        let mut tokens = Tokenizer::new(reader, self.syntax, None);
        let mut records = Records::default();
        let names = if self.header {
            let header = self.header(&mut tokens, &mut records, file)?;
            Some(header)
        } else {
            None
        };
        let mut votes: Vec<infer::Votes> = Vec::new();
        let mut seen = 0;
        while seen < rows.max(1) && next(&mut tokens, &mut records, rows.max(1) - seen, file)? {
            for r in 0..records.len() {
                let width = records.width(r);
                votes.resize(width, infer::Votes::default());
                for (c, vote) in votes.iter_mut().enumerate() {
                    let (bytes, quoted) = records.field(r, c);
                    if self.nulls.is_null(bytes, quoted) {
                        continue;
                    }
                    // Invalid UTF-8 is reported by the read, at its line.
                    vote.add(&String::from_utf8_lossy(bytes));
                }
            }
            seen += records.len();
        }
        let names = match names {
            Some(names) => names,
            None if votes.is_empty() => {
                return Err(FileError::Decode {
                    file: file.to_string(),
                    message: "the file has no records to infer column types from (and \
                              csv.header = false); declare `columns`"
                        .into(),
                });
            }
            None => (1..=votes.len()).map(|i| format!("column_{i}")).collect(),
        };
        // A file of only a header says nothing about types: its columns are Null, which
        // fits any existing table column (so a header-only file can empty a table).
        let typed = seen > 0;
        votes.resize(names.len(), infer::Votes::default());
        Ok(Schema::new(
            names
                .into_iter()
                .zip(votes)
                .map(|(name, v)| {
                    let t = if typed { v.data_type() } else { DataType::Null };
                    Field::new(name, t, true)
                })
                .collect::<Vec<_>>(),
        ))
    }

    /// The header record's names; a file without one is an error.
    fn header<R: BufRead>(
        &self,
        tokens: &mut Tokenizer<R>,
        records: &mut Records,
        file: &str,
    ) -> Result<Vec<String>, FileError> {
        if !next(tokens, records, 1, file)? {
            return Err(FileError::Decode {
                file: file.to_string(),
                message: "the file is empty: it has no header line (csv.header = true)".into(),
            });
        }
        (0..records.width(0))
            .map(|c| {
                let (bytes, _) = records.field(0, c);
                String::from_utf8(bytes.to_vec()).map_err(|_| FileError::DecodeAt {
                    file: file.to_string(),
                    line: records.line(0),
                    message: format!("header column {}: invalid UTF-8", c + 1),
                })
            })
            .collect()
    }

    /// Decode the whole of `reader` into batches of `schema`, calling `emit` for each; stops
    /// early when `emit` returns false (the run was cancelled). With `check_header`, the
    /// file's header must name `schema`'s columns in order (files of one inferred schema).
    pub(crate) fn read(
        &self,
        reader: impl BufRead,
        schema: &SchemaRef,
        batch_rows: usize,
        file: &str,
        check_header: bool,
        emit: &mut dyn FnMut(arrow_array::RecordBatch) -> bool,
    ) -> Result<(), FileError> {
        let width = schema.fields().len();
        let mut tokens = Tokenizer::new(reader, self.syntax, Some(width));
        let mut records = Records::default();
        if self.header {
            let names = self.header(&mut tokens, &mut records, file)?;
            let expected: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            if check_header && names != expected {
                return Err(FileError::DecodeAt {
                    file: file.to_string(),
                    line: records.line(0),
                    message: format!(
                        "the header names columns {} but the first file's are {}; read files \
                         of one layout, or declare `columns`",
                        names.join(", "),
                        expected.join(", ")
                    ),
                });
            }
        }
        while next(&mut tokens, &mut records, batch_rows, file)? {
            let batch =
                decode::decode(&records, schema, &self.nulls).map_err(|e| FileError::DecodeAt {
                    file: file.to_string(),
                    line: e.line,
                    message: e.message,
                })?;
            if !emit(batch) {
                break;
            }
        }
        Ok(())
    }
}

/// The next batch of at most `rows` records; false at the end of the file.
fn next<R: BufRead>(
    tokens: &mut Tokenizer<R>,
    records: &mut Records,
    rows: usize,
    file: &str,
) -> Result<bool, FileError> {
    tokens.next_batch(records, rows).map_err(|e| match e {
        TokenError::Io(source) => FileError::Io {
            file: file.to_string(),
            source,
        },
        TokenError::At { line, message } => FileError::DecodeAt {
            file: file.to_string(),
            line,
            message,
        },
    })
}

#[cfg(test)]
mod tests;
