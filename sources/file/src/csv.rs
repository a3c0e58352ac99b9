//! CSV: schema inference over the first rows and streaming decode into Arrow batches.

use std::io::BufRead;
use std::sync::LazyLock;

use arrow_csv::reader::Format as CsvFormat;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use regex::Regex;

use crate::config::CsvOptions;
use crate::error::FileError;

/// The parsed dialect of `[source.csv]`.
#[derive(Debug, Clone)]
pub(crate) struct Dialect {
    header: bool,
    delimiter: u8,
    quote: u8,
    escape: Option<u8>,
    comment: Option<u8>,
    null_regex: Option<Regex>,
}

fn one_byte(key: &str, value: &str) -> Result<u8, FileError> {
    let unescaped = match value {
        "\\t" => "\t",
        other => other,
    };
    match unescaped.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(FileError::Config(format!(
            "`csv.{key}` must be a single ASCII character, got {value:?}"
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
        let null_regex = if opts.null_values == [String::new()] {
            None
        } else {
            let alternatives: Vec<String> =
                opts.null_values.iter().map(|v| regex::escape(v)).collect();
            let pattern = format!("^(?:{})$", alternatives.join("|"));
            Some(
                Regex::new(&pattern)
                    .map_err(|e| FileError::Config(format!("`csv.null_values`: {e}")))?,
            )
        };
        Ok(Self {
            header: opts.header,
            delimiter,
            quote: one_byte("quote", &opts.quote)?,
            escape: opts
                .escape
                .as_deref()
                .map(|e| one_byte("escape", e))
                .transpose()?,
            comment: opts
                .comment
                .as_deref()
                .map(|c| one_byte("comment", c))
                .transpose()?,
            null_regex,
        })
    }

    fn format(&self) -> CsvFormat {
        let mut f = CsvFormat::default()
            .with_header(self.header)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote);
        if let Some(e) = self.escape {
            f = f.with_escape(e);
        }
        if let Some(c) = self.comment {
            f = f.with_comment(c);
        }
        if let Some(re) = &self.null_regex {
            f = f.with_null_regex(re.clone());
        }
        f
    }

    /// Infer column names and types from the first `rows` records.
    pub(crate) fn infer(
        &self,
        reader: impl BufRead,
        rows: usize,
        file: &str,
    ) -> Result<Schema, FileError> {
        let (schema, _) = self
            .format()
            .infer_schema(reader, Some(rows.max(1)))
            .map_err(|e| decode_error(file, None, e))?;
        Ok(schema)
    }

    /// Decode the whole of `reader` into batches of `schema`, calling `emit` for each; stops
    /// early when `emit` returns false (the run was cancelled).
    pub(crate) fn read(
        &self,
        reader: impl BufRead,
        schema: &SchemaRef,
        batch_rows: usize,
        file: &str,
        emit: &mut dyn FnMut(arrow_array::RecordBatch) -> bool,
    ) -> Result<(), FileError> {
        let csv = arrow_csv::ReaderBuilder::new(schema.clone())
            .with_format(self.format())
            .with_batch_size(batch_rows)
            .build_buffered(reader)
            .map_err(|e| decode_error(file, Some(schema), e))?;
        for batch in csv {
            let batch = batch.map_err(|e| decode_error(file, Some(schema), e))?;
            if !emit(batch) {
                break;
            }
        }
        Ok(())
    }
}

static FIELD_COUNT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"incorrect number of fields for line (\d+), expected (\d+) got (.+)$").ok()
});
/// The csv crate's wording, seen while inferring the schema (its line is the physical line).
static UNEQUAL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"Expected (\d+) records, found (\d+) records at line (\d+)").ok());
static UTF8: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"invalid UTF-8 data for line (\d+) and field (\d+)").ok());
static VALUE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?s)Error while parsing value '(.*)' as type '(.+)' for column (\d+) at line (\d+)\. Row data: '(.*)'$").ok()
});
static TIMESTAMP: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?s)Error parsing column (\d+) at line (\d+): (.*)$").ok());

/// Turn an arrow-csv error into one naming the file, the line and the column; I/O failures
/// below the decoder stay I/O errors (external, not the data's fault).
///
/// arrow-csv 58 counts records, two ways: "incorrect number of fields for line N" and invalid
/// UTF-8 count from 1 including the header; value errors count data rows from 0 after the
/// header. Both are turned into the record's 1-based number counting the header, which is its
/// line in the file unless an earlier quoted field spans lines or comment lines precede it.
/// The tests pin both conventions.
pub(crate) fn decode_error(file: &str, schema: Option<&SchemaRef>, e: ArrowError) -> FileError {
    if let ArrowError::IoError(_, source) = e {
        return FileError::Io {
            file: file.to_string(),
            source,
        };
    }
    if let ArrowError::ExternalError(source) = e {
        return FileError::Io {
            file: file.to_string(),
            source: std::io::Error::other(source),
        };
    }
    let message = e.to_string();
    let column = |idx: &str| -> String {
        let name = idx
            .parse::<usize>()
            .ok()
            .and_then(|i| schema.and_then(|s| s.fields().get(i).map(|f| f.name().clone())));
        match name {
            Some(n) => format!("column `{n}`"),
            None => format!("column {idx}"),
        }
    };
    let num = |s: &str| s.parse::<u64>().unwrap_or(0);
    if let Some(c) = FIELD_COUNT.as_ref().and_then(|re| re.captures(&message)) {
        return FileError::DecodeAt {
            file: file.to_string(),
            line: num(&c[1]),
            message: format!("expected {} fields, got {}", &c[2], &c[3]),
        };
    }
    if let Some(c) = UNEQUAL.as_ref().and_then(|re| re.captures(&message)) {
        return FileError::DecodeAt {
            file: file.to_string(),
            line: num(&c[3]),
            message: format!("expected {} fields, got {}", &c[1], &c[2]),
        };
    }
    if let Some(c) = UTF8.as_ref().and_then(|re| re.captures(&message)) {
        let field = c[2]
            .parse::<usize>()
            .unwrap_or(1)
            .saturating_sub(1)
            .to_string();
        return FileError::DecodeAt {
            file: file.to_string(),
            line: num(&c[1]),
            message: format!("{}: invalid UTF-8", column(&field)),
        };
    }
    if let Some(c) = VALUE.as_ref().and_then(|re| re.captures(&message)) {
        return FileError::DecodeAt {
            file: file.to_string(),
            line: num(&c[4]) + 1,
            message: format!("{}: cannot parse {:?} as {}", column(&c[3]), &c[1], &c[2]),
        };
    }
    if let Some(c) = TIMESTAMP.as_ref().and_then(|re| re.captures(&message)) {
        return FileError::DecodeAt {
            file: file.to_string(),
            line: num(&c[2]) + 1,
            message: format!("{}: {}", column(&c[1]), &c[3]),
        };
    }
    FileError::Decode {
        file: file.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{DataType, Field};
    use std::sync::Arc;

    fn arc(schema: Schema) -> SchemaRef {
        Arc::new(schema)
    }

    fn read_err(text: &str, header: bool, schema: Schema) -> String {
        let dialect = Dialect::new(
            &CsvOptions {
                header,
                ..CsvOptions::default()
            },
            false,
        )
        .expect("dialect");
        let schema = arc(schema);
        dialect
            .read(text.as_bytes(), &schema, 2, "x.csv", &mut |_| true)
            .expect_err("bad input")
            .to_string()
    }

    fn two_ints() -> Schema {
        Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ])
    }

    #[test]
    fn value_errors_name_the_physical_line_and_column() {
        let text = "a,b\n1,2\n3,4\n5,x\n";
        assert_eq!(
            read_err(text, true, two_ints()),
            "x.csv:4: column `b`: cannot parse \"x\" as Int64"
        );
        let text = "1,2\nz,4\n";
        assert_eq!(
            read_err(text, false, two_ints()),
            "x.csv:2: column `a`: cannot parse \"z\" as Int64"
        );
    }

    #[test]
    fn field_count_errors_name_the_physical_line() {
        let text = "a,b\n1,2\n3,4\n5,6\n7\n";
        assert_eq!(
            read_err(text, true, two_ints()),
            "x.csv:5: expected 2 fields, got 1"
        );
    }

    #[test]
    fn inference_errors_name_the_physical_line() {
        let dialect = Dialect::new(&CsvOptions::default(), false).expect("dialect");
        let err = dialect
            .infer("a,b\n1,2\n3\n".as_bytes(), 10, "x.csv")
            .expect_err("short row");
        assert_eq!(err.to_string(), "x.csv:3: expected 2 fields, got 1");
    }

    #[test]
    fn invalid_utf8_names_line_and_column() {
        let mut text = b"a,b\n1,2\n3,".to_vec();
        text.extend_from_slice(&[0xff, 0xfe, b'\n']);
        let schema = arc(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let dialect = Dialect::new(&CsvOptions::default(), false).expect("dialect");
        let err = dialect
            .read(&text[..], &schema, 10, "x.csv", &mut |_| true)
            .expect_err("bad utf-8");
        assert_eq!(err.to_string(), "x.csv:3: column `b`: invalid UTF-8");
    }

    #[test]
    fn null_values_become_nulls() {
        let dialect = Dialect::new(
            &CsvOptions {
                null_values: vec!["NULL".into(), "\\N".into()],
                ..CsvOptions::default()
            },
            false,
        )
        .expect("dialect");
        let schema = arc(two_ints());
        let mut rows = Vec::new();
        dialect
            .read(
                "a,b\nNULL,1\n\\N,2\n".as_bytes(),
                &schema,
                10,
                "x",
                &mut |b| {
                    rows.push(b.column(0).null_count());
                    true
                },
            )
            .expect("reads");
        assert_eq!(rows, vec![2]);
    }
}
