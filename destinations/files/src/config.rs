//! The `[destination]` table of `type = "files"`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Loads into a directory of data files. Common keys `mode` and `allow_empty` are documented
/// with the pipeline format; these are the file destination's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The directory the files go to: a local path (created on the first run) or an object
    /// store URL `s3://bucket/prefix`, `gs://…`, `az://…` (also `abfss://`), whose credentials
    /// come from the environment or `storage_options`. pipe's commit log is kept under
    /// `_pipe/` inside it.
    pub path: String,
    /// The file format: `parquet` (default), `csv` or `ndjson`.
    #[serde(default)]
    pub format: Format,
    /// Hive-style partition columns: each file goes under `col=value/` directories, and the
    /// partition columns are not repeated inside the files (readers rebuild them from the
    /// path). Integer, string, date and boolean columns only. Kept from the first run.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// What `mode = "replace"` replaces: `table` (default: every file under `path`) or
    /// `partitions` (only the partitions this run wrote; the others stay).
    #[serde(default)]
    pub replace_scope: ReplaceScope,
    /// Object store options (`aws_endpoint`, `aws_region`, Iceberg's `s3.endpoint`, …);
    /// unset keys come from the environment.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Roll to a new file past this many MB (default 128).
    #[serde(
        default = "default_target_file_size_mb",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 65_536>"
    )]
    pub target_file_size_mb: u64,
    /// Rows per Parquet row group (default 262144): bounds the memory each open file buffers.
    #[serde(
        default = "default_row_group_rows",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 67_108_864>"
    )]
    pub row_group_rows: usize,
    /// Files written at the same time, each by its own task (default: one per core, at
    /// most 4).
    #[serde(
        default,
        deserialize_with = "pipe_framework::config::within_opt::<_, _, 1, 64>"
    )]
    pub writers: Option<usize>,
    /// Compression. Parquet: `zstd` (default, level 3), `zstd(N)`, `snappy`, `lz4`, `gzip`
    /// or `none`. CSV and NDJSON: `none` (default), `gzip` or `zstd` (the whole file,
    /// named `.csv.gz` / `.csv.zst`).
    #[serde(default)]
    pub compression: Option<String>,
    /// Partitions a writer keeps open at once; past it the largest open file is finished
    /// (default 64). Bounds memory when a run touches many partitions.
    #[serde(
        default = "default_max_open_files",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 10_000>"
    )]
    pub max_open_files: usize,
    /// CSV settings (`format = "csv"`).
    #[serde(default)]
    pub csv: CsvOptions,
    /// How many times a commit that lost a race with another writer on an object store is
    /// retried on the new log (default 10). Local directories serialize commits with a lock.
    #[serde(
        default = "default_commit_retries",
        deserialize_with = "pipe_framework::config::within::<_, _, 0, 100>"
    )]
    pub commit_retries: usize,
}

/// `[destination.csv]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Field delimiter, one ASCII character (default `,`).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Write a header line with the column names (default true).
    #[serde(default = "yes")]
    pub header: bool,
    /// How NULL is written (default: an empty field). The empty string is written as `""`,
    /// so NULL and empty stay apart for readers that honour quotes (DuckDB, pyarrow).
    #[serde(default)]
    pub null: String,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: ',',
            header: true,
            null: String::new(),
        }
    }
}

/// The format of the data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Apache Parquet.
    #[default]
    Parquet,
    /// Comma-separated values (RFC 4180 quoting).
    Csv,
    /// Newline-delimited JSON, one object per row.
    Ndjson,
}

impl Format {
    /// The TOML spelling, and the files' extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }

    /// Parse the TOML spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "parquet" => Format::Parquet,
            "csv" => Format::Csv,
            "ndjson" | "jsonl" => Format::Ndjson,
            _ => return None,
        })
    }
}

/// What `replace` replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplaceScope {
    /// Every file of the table.
    #[default]
    Table,
    /// The partitions the run wrote.
    Partitions,
}

fn default_target_file_size_mb() -> u64 {
    128
}

fn default_row_group_rows() -> usize {
    256 * 1024
}

fn default_max_open_files() -> usize {
    64
}

fn default_commit_retries() -> usize {
    10
}

fn default_delimiter() -> char {
    ','
}

fn yes() -> bool {
    true
}
