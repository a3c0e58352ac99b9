//! The `[destination]` table of `type = "duckdb"`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Loads into a DuckDB database file. Common keys `mode` and `merge_keys` are documented with
/// the pipeline format; these are DuckDB's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuckDbConfig {
    /// Database file; it and its directory are created if missing. Default
    /// `.pipe/pipe.duckdb`, relative to the working directory.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Target table, `schema.table` or `table` (schema `main`). Created on the first run.
    pub table: String,
    /// DuckDB's memory limit in MB (default 256). Bounds the buffer pool, so memory stays flat
    /// however large the table: written blocks are evicted and staged data beyond it spills to
    /// `<path>.tmp`. Raise it for large merges.
    #[serde(
        default = "default_memory_limit_mb",
        deserialize_with = "pipe_framework::config::within::<_, _, 16, 16_777_216>"
    )]
    pub memory_limit_mb: u64,
    /// Threads DuckDB may use (default: one per core).
    #[serde(
        default,
        deserialize_with = "pipe_framework::config::within_opt::<_, _, 1, 1024>"
    )]
    pub threads: Option<u32>,
    /// Other DuckDB settings for the run's connection, e.g.
    /// `{ disabled_compression_methods = "fsst", checkpoint_threshold = "1GB" }` (see
    /// DuckDB's configuration reference). Applied when the database is opened.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

fn default_memory_limit_mb() -> u64 {
    256
}

fn default_path() -> PathBuf {
    PathBuf::from(".pipe/pipe.duckdb")
}
