//! The `[source]` table of `type = "file"`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Reads CSV, NDJSON, Parquet and Arrow IPC files from local disk or object storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// A file, a directory (read recursively; names starting with `.` or `_` are skipped), or
    /// a glob (`data/2024-*.csv`). Local paths resolve against the working directory. URLs
    /// `s3://`, `gs://`, `az://`/`abfss://`, `file://`, `http(s)://` read through
    /// `object_store`, with credentials from the usual environment variables
    /// (`AWS_ACCESS_KEY_ID`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...).
    /// Files are read in lexicographic order.
    pub path: String,

    /// `csv`, `ndjson`, `parquet` or `ipc` (Arrow IPC file or stream, detected by content).
    /// Default: from each file's extension (`.csv`, `.tsv`, `.ndjson`/`.jsonl`/`.json`,
    /// `.parquet`, `.arrow`/`.feather`/`.ipc`/`.arrows`, optionally followed by `.gz`/`.zst`).
    #[serde(default)]
    pub format: Option<Format>,

    /// `gzip`, `zstd` or `none`, for CSV and NDJSON. Default: from the extension.
    #[serde(default)]
    pub compression: Option<Compression>,

    /// Rows per record batch (default 16384). Memory in flight is about
    /// `batch_rows × row size × (runtime.channel_capacity + 2)` per stage.
    #[serde(
        default = "default_batch_rows",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 1_048_576>"
    )]
    pub batch_rows: usize,

    /// The full schema, in file column order, instead of inference: `[{ name = "id", type =
    /// "int64" }, ...]`. Type names: see `docs/types.md`. For Parquet/IPC, columns are
    /// selected by name and cast to the given types.
    #[serde(default)]
    pub columns: Option<Vec<ColumnSpec>>,

    /// Type overrides applied after inference, by column name, e.g.
    /// `{ o_totalprice = "decimal(15,2)", o_orderdate = "date" }`.
    #[serde(default)]
    pub column_types: BTreeMap<String, String>,

    /// CSV options.
    #[serde(default)]
    pub csv: CsvOptions,

    /// Rows (CSV) or lines (NDJSON) of the first file read to infer the schema (default 1000).
    #[serde(
        default = "default_infer_rows",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 10_000_000>"
    )]
    pub infer_rows: usize,
}

/// One column of an explicit schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Type name, e.g. `int64`, `decimal(38,10)`, `timestamptz`, `list<string>`.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether NULL is allowed (default true). A NULL in a non-nullable column is an error.
    #[serde(default = "yes")]
    pub nullable: bool,
}

/// CSV dialect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Whether the first line holds column names (default true). Without a header, columns
    /// are named `column_1`, `column_2`, ... unless `columns` is given.
    #[serde(default = "yes")]
    pub header: bool,
    /// Field separator, one ASCII character (default `,`; `\t` for `.tsv` files).
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Quote character, one ASCII character (default `"`).
    #[serde(default = "default_quote")]
    pub quote: String,
    /// Escape character inside quoted fields (default: none; quotes are escaped by doubling).
    #[serde(default)]
    pub escape: Option<String>,
    /// Lines starting with this character are skipped (default: none).
    #[serde(default)]
    pub comment: Option<String>,
    /// Field values read as NULL when they appear unquoted (default `[""]`: an empty field is
    /// NULL). A quoted field is always its text: `""` is an empty string, `"NA"` the text NA.
    #[serde(default = "default_null_values")]
    pub null_values: Vec<String>,
    /// The longest record (one row, all its fields) in MiB (default 64; 1 to 2048). A longer
    /// one is an error naming its line: a quote that never closes or a missing line end
    /// cannot exhaust memory.
    #[serde(
        default = "default_max_record_mb",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 2048>"
    )]
    pub max_record_mb: u64,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header: true,
            delimiter: None,
            quote: default_quote(),
            escape: None,
            comment: None,
            null_values: default_null_values(),
            max_record_mb: default_max_record_mb(),
        }
    }
}

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Comma- (or otherwise) separated values.
    Csv,
    /// Newline-delimited JSON, one object per line.
    #[serde(alias = "jsonl", alias = "json")]
    Ndjson,
    /// Apache Parquet.
    Parquet,
    /// Arrow IPC, file (Feather v2) or stream format.
    #[serde(alias = "arrow", alias = "feather")]
    Ipc,
}

/// Compression of a CSV or NDJSON file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (`.gz`).
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
}

fn yes() -> bool {
    true
}

fn default_batch_rows() -> usize {
    16_384
}

fn default_infer_rows() -> usize {
    1000
}

fn default_quote() -> String {
    "\"".to_string()
}

fn default_max_record_mb() -> u64 {
    64
}

fn default_null_values() -> Vec<String> {
    vec![String::new()]
}

impl Format {
    /// The format and compression a file name implies.
    pub fn from_name(name: &str) -> (Option<Format>, Compression) {
        let lower = name.to_ascii_lowercase();
        let (stem, compression) = if let Some(s) = lower.strip_suffix(".gz") {
            (s, Compression::Gzip)
        } else if let Some(s) = lower.strip_suffix(".zst") {
            (s, Compression::Zstd)
        } else {
            (lower.as_str(), Compression::None)
        };
        let ext = stem.rsplit_once('.').map_or("", |(_, e)| e);
        let format = match ext {
            "csv" | "tsv" | "txt" => Some(Format::Csv),
            "ndjson" | "jsonl" | "json" => Some(Format::Ndjson),
            "parquet" | "pq" => Some(Format::Parquet),
            "arrow" | "feather" | "ipc" | "arrows" => Some(Format::Ipc),
            _ => None,
        };
        (format, compression)
    }

    /// The name used in TOML and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
            Format::Ipc => "ipc",
        }
    }
}
