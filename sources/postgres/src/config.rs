//! The `[source]` table of `type = "postgres"`.

use pipe_framework::Secret;
use serde::Deserialize;

/// Reads a PostgreSQL table or query with binary `COPY`, optionally in parallel and
/// incrementally.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, `postgres://user:password@host:5432/db?sslmode=prefer`. Put the password
    /// in the environment: `url = "postgres://etl:${PG_PASSWORD}@db/sales"`. It never appears
    /// in logs or errors.
    pub url: Secret,
    /// The table to read, `schema.table` or `table` (search path). Either this or `query`.
    #[serde(default)]
    pub table: Option<String>,
    /// A `SELECT` to read instead of a table. Either this or `table`.
    #[serde(default)]
    pub query: Option<String>,
    /// Columns to read (default: all), in this order.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// A SQL condition added to the read, e.g. `"status <> 'cancelled'"`.
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    /// Rows per Arrow batch (default 16384).
    #[serde(
        default = "default_batch_rows",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 1_048_576>"
    )]
    pub batch_rows: usize,
    /// Connections reading in parallel (default 1). They share one exported snapshot, so the
    /// result is one consistent point in time. The work is split on `partition_column`, else
    /// on a single-column integer primary key, else on physical `ctid` page ranges (tables
    /// only).
    #[serde(
        default = "one",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 64>"
    )]
    pub parallelism: usize,
    /// An integer column to split parallel reads on (required for a parallel `query`).
    #[serde(default)]
    pub partition_column: Option<String>,
    /// Incremental loads: a column that only grows (`updated_at`, a serial id). Each run reads
    /// rows with `cursor >= last committed value`, drops the rows at exactly that value it
    /// already loaded (by content hash), and commits the new maximum with the data.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Where the first incremental run starts, as a SQL literal of the cursor's type
    /// (`"2024-01-01"`, `"1000"`). Default: read everything.
    #[serde(default)]
    pub initial_value: Option<String>,
    /// Where incremental reads stop (exclusive), as a SQL literal of the cursor's type.
    /// Default: no end.
    #[serde(default)]
    pub end_value: Option<String>,
    /// Re-read this much before the committed position on every run, for rows that commit
    /// late with a cursor below it (`updated_at DEFAULT now()` is the transaction's start, a
    /// serial id is taken before commit): a PostgreSQL interval for time cursors (`"10
    /// minutes"`), a number for integer cursors. Re-read rows are loaded again, so this
    /// requires mode = "merge", which deduplicates them.
    #[serde(default)]
    pub lookback: Option<String>,
    /// Rows whose `cursor` is NULL: an incremental read (`cursor >= v`) never reaches them.
    /// `warn` (default) counts them on each incremental run (one `count(*)` in the read's
    /// snapshot) and warns in the run summary; `error` fails the run while there are any;
    /// `ignore` skips the count.
    #[serde(default)]
    pub null_cursor: NullCursor,
    /// What to do with a column type pipe cannot map: `error` (default) or `text` (read it as
    /// PostgreSQL's text form).
    #[serde(default)]
    pub unsupported_types: Unsupported,
    /// `numeric` columns without precision: `string` (default: exact text), `error`, or a
    /// decimal type like `"decimal(38,10)"` (a value that does not fit exactly is an error,
    /// never rounded).
    #[serde(default = "default_unconstrained")]
    pub unconstrained_numeric: String,
    /// Connect timeout in seconds (default 10).
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 3600>"
    )]
    pub connect_timeout_secs: u64,
}

/// Handling of rows whose cursor is NULL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NullCursor {
    /// Count them and warn.
    #[default]
    Warn,
    /// Fail the run while there are any.
    Error,
    /// Do not count them.
    Ignore,
}

/// Handling of column types without an Arrow mapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unsupported {
    /// Fail before reading, naming the column and type.
    #[default]
    Error,
    /// Read as text (`column::text`).
    Text,
}

fn default_batch_rows() -> usize {
    16_384
}

fn one() -> usize {
    1
}

fn default_unconstrained() -> String {
    "string".to_string()
}

fn default_connect_timeout() -> u64 {
    10
}
