//! One open data file: Parquet through parquet's async Arrow writer, CSV and NDJSON through
//! arrow-csv and arrow-json a batch at a time (optionally gzip- or zstd-compressed as one
//! stream), all uploaded through object_store (multipart past 10 MB).

use std::io::Write;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, SchemaRef};
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::async_writer::ParquetObjectWriter;
use parquet::file::properties::WriterProperties;
use pipe_framework::{Error, Result};
use tokio::io::AsyncWriteExt;

use crate::config::{CsvOptions, Format};

/// Whole-file compression of the text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextCompression {
    /// Plain text.
    None,
    /// gzip (`.gz`).
    Gzip,
    /// zstd (`.zst`).
    Zstd,
}

impl TextCompression {
    /// Parse the `compression` key of a CSV or NDJSON destination.
    pub(crate) fn parse(text: Option<&str>) -> Result<Self> {
        Ok(match text.map(str::trim) {
            None | Some("none") | Some("uncompressed") => Self::None,
            Some("gzip") => Self::Gzip,
            Some("zstd") => Self::Zstd,
            Some(other) => {
                return Err(Error::user(format!(
                    "compression = \"{other}\": CSV and NDJSON files take none, gzip or zstd"
                )));
            }
        })
    }

    /// The extension after the format's (`.gz`).
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Gzip => ".gz",
            Self::Zstd => ".zst",
        }
    }
}

/// How files are encoded: the format and its settings.
#[derive(Debug, Clone)]
pub(crate) enum Encoding {
    /// Parquet with these writer properties.
    Parquet(Box<WriterProperties>),
    /// CSV.
    Csv(CsvOptions, TextCompression),
    /// NDJSON.
    Ndjson(TextCompression),
}

impl Encoding {
    /// The file extension (`parquet`, `csv.gz`).
    pub(crate) fn extension(&self) -> String {
        match self {
            Self::Parquet(_) => Format::Parquet.as_str().into(),
            Self::Csv(_, c) => format!("csv{}", c.suffix()),
            Self::Ndjson(c) => format!("ndjson{}", c.suffix()),
        }
    }
}

/// Refuse a schema the format cannot hold, naming the column.
pub(crate) fn check_schema(format: Format, schema: &arrow_schema::Schema) -> Result<()> {
    if format != Format::Csv {
        return Ok(());
    }
    for field in schema.fields() {
        let t = field.data_type();
        if t.is_nested() || matches!(t, DataType::Dictionary(_, _)) {
            return Err(Error::user(format!(
                "column `{}` has type {t}, which CSV cannot hold; use format = \"parquet\" or \
                 \"ndjson\"",
                field.name()
            )));
        }
    }
    Ok(())
}

enum Compressor {
    None(Vec<u8>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Compressor {
    fn new(c: TextCompression) -> Result<Self> {
        Ok(match c {
            TextCompression::None => Self::None(Vec::new()),
            TextCompression::Gzip => Self::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            )),
            TextCompression::Zstd => Self::Zstd(
                zstd::stream::write::Encoder::new(Vec::new(), 3)
                    .map_err(|e| Error::internal("starting zstd").with_source(e))?,
            ),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::None(out) => Write::write_all(out, bytes),
            Self::Gzip(e) => e.write_all(bytes),
            Self::Zstd(e) => e.write_all(bytes),
        }
    }

    /// The compressed bytes ready so far.
    fn take(&mut self) -> Vec<u8> {
        match self {
            Self::None(out) => std::mem::take(out),
            Self::Gzip(e) => std::mem::take(e.get_mut()),
            Self::Zstd(e) => std::mem::take(e.get_mut()),
        }
    }

    /// The stream's last bytes.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::None(out) => Ok(out),
            Self::Gzip(e) => e.finish(),
            Self::Zstd(e) => e.finish(),
        }
    }
}

enum Inner {
    Parquet(AsyncArrowWriter<ParquetObjectWriter>),
    Text {
        out: BufWriter,
        compressor: Compressor,
        /// CSV settings (`None`: NDJSON).
        csv: Option<CsvOptions>,
        /// The CSV header is still to be written.
        header: bool,
    },
}

/// One data file being written.
pub(crate) struct OpenFile {
    inner: Inner,
    /// Rows written.
    pub(crate) rows: u64,
    /// Bytes uploaded or buffered (compressed).
    bytes: u64,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("rows", &self.rows)
            .finish()
    }
}

fn write_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::external("writing a data file").with_source(e)
}

impl OpenFile {
    /// Start a file at `path` in `store` for batches of `schema`.
    pub(crate) fn open(
        store: Arc<dyn ObjectStore>,
        path: Path,
        schema: SchemaRef,
        encoding: &Encoding,
    ) -> Result<Self> {
        let inner = match encoding {
            Encoding::Parquet(props) => Inner::Parquet(
                AsyncArrowWriter::try_new(
                    ParquetObjectWriter::new(store, path),
                    schema,
                    Some(props.as_ref().clone()),
                )
                .map_err(|e| {
                    Error::user("this schema cannot be written as Parquet").with_source(e)
                })?,
            ),
            Encoding::Csv(options, c) => Inner::Text {
                out: BufWriter::new(store, path),
                compressor: Compressor::new(*c)?,
                csv: Some(options.clone()),
                header: options.header,
            },
            Encoding::Ndjson(c) => Inner::Text {
                out: BufWriter::new(store, path),
                compressor: Compressor::new(*c)?,
                csv: None,
                header: false,
            },
        };
        Ok(Self {
            inner,
            rows: 0,
            bytes: 0,
        })
    }

    /// The file's size so far (Parquet: written plus the row group being encoded).
    pub(crate) fn size(&self) -> u64 {
        match &self.inner {
            Inner::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
            Inner::Text { .. } => self.bytes,
        }
    }

    /// Append `batch`.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        match &mut self.inner {
            Inner::Parquet(w) => w.write(batch).await.map_err(write_error),
            Inner::Text {
                out,
                compressor,
                csv,
                header,
            } => {
                let text = match csv {
                    Some(options) => encode_csv(batch, options, std::mem::take(header))?,
                    None => encode_ndjson(batch)?,
                };
                compressor.write(&text).map_err(write_error)?;
                let ready = compressor.take();
                self.bytes += ready.len() as u64;
                out.write_all(&ready).await.map_err(write_error)
            }
        }
    }

    /// Finish the file; its size.
    pub(crate) async fn close(self) -> Result<u64> {
        match self.inner {
            Inner::Parquet(mut w) => {
                w.finish().await.map_err(write_error)?;
                Ok(w.bytes_written() as u64)
            }
            Inner::Text {
                mut out,
                compressor,
                ..
            } => {
                let rest = compressor.finish().map_err(write_error)?;
                out.write_all(&rest).await.map_err(write_error)?;
                out.shutdown().await.map_err(write_error)?;
                Ok(self.bytes + rest.len() as u64)
            }
        }
    }

    /// Give up the file (nothing is uploaded past what multipart parts already went).
    pub(crate) async fn abort(self) {
        if let Inner::Text { mut out, .. } = self.inner {
            let _ = out.abort().await;
        }
    }
}

fn encode_csv(batch: &RecordBatch, options: &CsvOptions, header: bool) -> Result<Vec<u8>> {
    let delimiter = u8::try_from(options.delimiter)
        .map_err(|_| Error::user("csv.delimiter must be one ASCII character"))?;
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2);
    let mut writer = arrow_csv::WriterBuilder::new()
        .with_header(header)
        .with_delimiter(delimiter)
        .with_null(options.null.clone())
        .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.f".into())
        .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.f%:z".into())
        .build(&mut out);
    let marked = if options.null.is_empty() {
        mark_empty_strings(batch)?
    } else {
        None
    };
    writer
        .write(marked.as_ref().unwrap_or(batch))
        .map_err(|e| Error::user("encoding CSV").with_source(e))?;
    drop(writer);
    Ok(if marked.is_some() { unmark(out) } else { out })
}

/// An empty string's stand-in while encoding: a NUL (never in real text columns in
/// practice) and a quote, so the CSV writer must quote it (`"\0"""`), which is then
/// rewritten to `""`.
const EMPTY_MARK: &str = "\0\"";
const EMPTY_MARK_ENCODED: &[u8] = b"\"\0\"\"\"";

/// CSV has no NULL: arrow-csv writes an empty string and a NULL alike when NULL is spelled
/// as an empty field. Readers (DuckDB, pyarrow, Spark) tell a quoted empty field (`""`, the
/// empty string) from an empty one (NULL), so empty strings are written quoted: they are
/// swapped for [`EMPTY_MARK`], which the writer must quote, and the encoded mark becomes `""`.
fn mark_empty_strings(batch: &RecordBatch) -> Result<Option<RecordBatch>> {
    let mut columns = batch.columns().to_vec();
    let mut fields: Vec<arrow_schema::FieldRef> = batch.schema().fields().iter().cloned().collect();
    let mut marked = false;
    for (column, field) in columns.iter_mut().zip(fields.iter_mut()) {
        if !matches!(
            column.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            continue;
        }
        let text = arrow_cast::cast(column, &DataType::Utf8)
            .map_err(|e| Error::internal("string column as UTF-8").with_source(e))?;
        let text = text.as_string::<i32>();
        if !text.iter().any(|v| v == Some("")) {
            continue;
        }
        let swapped: StringArray = text
            .iter()
            .map(|v| v.map(|s| if s.is_empty() { EMPTY_MARK } else { s }))
            .collect();
        *column = Arc::new(swapped);
        *field = Arc::new(field.as_ref().clone().with_data_type(DataType::Utf8));
        marked = true;
    }
    if !marked {
        return Ok(None);
    }
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    RecordBatch::try_new(schema, columns)
        .map(Some)
        .map_err(|e| Error::internal("marking empty strings").with_source(e))
}

/// `text` with every encoded [`EMPTY_MARK`] written as `""`.
fn unmark(text: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_slice();
    while let Some(at) = rest.iter().position(|&b| b == 0) {
        let start = at.saturating_sub(1);
        if rest[start..].starts_with(EMPTY_MARK_ENCODED) {
            out.extend_from_slice(&rest[..start]);
            out.extend_from_slice(b"\"\"");
            rest = &rest[start + EMPTY_MARK_ENCODED.len()..];
        } else {
            out.extend_from_slice(&rest[..=at]);
            rest = &rest[at + 1..];
        }
    }
    out.extend_from_slice(rest);
    out
}

fn encode_ndjson(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(batch.get_array_memory_size());
    let mut writer = arrow_json::LineDelimitedWriter::new(&mut out);
    writer
        .write(batch)
        .map_err(|e| Error::user("encoding NDJSON").with_source(e))?;
    writer
        .finish()
        .map_err(|e| Error::user("encoding NDJSON").with_source(e))?;
    drop(writer);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use arrow_array::{ArrayRef, Int64Array};

    use super::*;

    #[test]
    fn csv_keeps_null_and_the_empty_string_apart() {
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "s",
                Arc::new(StringArray::from(vec![Some(""), None, Some("a\"b,c")])) as ArrayRef,
            ),
        ])
        .unwrap();
        let text = encode_csv(&batch, &CsvOptions::default(), true).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "id,s\n1,\"\"\n2,\n3,\"a\"\"b,c\"\n"
        );
        let nul = RecordBatch::try_from_iter([(
            "s",
            Arc::new(StringArray::from(vec!["x\0y", ""])) as ArrayRef,
        )])
        .unwrap();
        let text = encode_csv(&nul, &CsvOptions::default(), false).unwrap();
        assert_eq!(text, b"x\0y\n\"\"\n");
    }
}
