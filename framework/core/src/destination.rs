//! The metadata and load stages: a [`Destination`] prepares its table for a schema and hands
//! out a [`Sink`] that stages batches and commits them atomically.

use std::fmt::{self, Debug};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::context::{RunContext, State};
use crate::error::{Error, Result};
use crate::quarantine::Quarantine;
use crate::stage::QuarantineSpec;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How a run's rows land in the destination table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Add the rows to the table.
    #[default]
    Append,
    /// Make the run's rows the table's whole content, atomically.
    Replace,
    /// Upsert on `merge_keys`: update rows whose key exists, insert the others.
    Merge,
    /// Add the source's existing files to the table as they are, without reading or
    /// rewriting their rows ([`Sink::register`]): only for sources that list files
    /// ([`crate::Source::existing_files`]) and destinations that can reference them.
    Register,
}

impl WriteMode {
    /// The modes that write rows, in documentation order (what most destinations support).
    pub const ALL: [WriteMode; 3] = [WriteMode::Append, WriteMode::Replace, WriteMode::Merge];

    /// Every mode, [`WriteMode::Register`] included.
    pub const EVERY: [WriteMode; 4] = [
        WriteMode::Append,
        WriteMode::Replace,
        WriteMode::Merge,
        WriteMode::Register,
    ];

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Append => "append",
            WriteMode::Replace => "replace",
            WriteMode::Merge => "merge",
            WriteMode::Register => "register",
        }
    }
}

impl fmt::Display for WriteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What may happen when the source schema differs from the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaEvolution {
    /// Add new columns and widen types where lossless (int → bigint, float → double,
    /// decimal precision up).
    #[default]
    Evolve,
    /// Reject any change to the table with an error before any data is written.
    Freeze,
    /// Keep the table as it is and drop source columns it does not have.
    DiscardColumns,
}

/// The write settings common to every destination (`mode`, `merge_keys`, `allow_empty`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriteSpec {
    /// How rows land.
    pub mode: WriteMode,
    /// Key columns for [`WriteMode::Merge`]; empty otherwise.
    pub merge_keys: Vec<String>,
    /// `replace` may leave the table empty (a run that read no rows). Off by default: an
    /// empty export must not wipe a table by accident.
    pub allow_empty: bool,
}

/// Everything the metadata stage needs to prepare the table.
#[derive(Debug, Clone)]
pub struct PrepareRequest {
    /// The run.
    pub ctx: RunContext,
    /// The schema of the batches the source will send.
    pub source_schema: SchemaRef,
    /// Mode and keys.
    pub write: WriteSpec,
    /// Schema evolution policy (`[metadata] schema_evolution`).
    pub evolution: SchemaEvolution,
}

/// A destination, built from its `[destination]` table.
#[async_trait]
pub trait Destination: Send + Sync + Debug {
    /// One line for logs and the summary, e.g. `duckdb .pipe/pipe.duckdb sales.orders`.
    fn describe(&self) -> String;

    /// Check that the destination is reachable and writable, changing nothing.
    async fn check(&self) -> Result<()>;

    /// The state the last committed run of this pipeline stored with its data in this
    /// destination (`CommitRequest::state`), read when a run starts. `Ok(None)`: this
    /// destination cannot store state atomically with its data.
    async fn committed_state(&self, ctx: &RunContext) -> Result<Option<State>> {
        let _ = ctx;
        Ok(None)
    }

    /// Whether [`Sink::commit`] can write rows quarantined as `spec` says
    /// ([`CommitRequest::quarantine`]) in the same atomic commit as the data, and where:
    /// an error (this destination cannot, or the table name is unusable) refuses the
    /// pipeline before any data moves. The default: it cannot.
    fn check_quarantine(&self, spec: &QuarantineSpec) -> Result<()> {
        let _ = spec;
        Err(Error::user(format!(
            "the contract quarantines rows, but destination {} cannot commit a quarantine \
             table in the same commit as the data; use on_violation = \"drop\", \"warn\" \
             or \"fail\"",
            self.describe()
        )))
    }

    /// The metadata stage: create or evolve the table for `req.source_schema` under the
    /// evolution policy (rejecting before any data is written under `freeze`), and open a
    /// sink staging this run. Nothing is visible to readers until [`Sink::commit`].
    async fn prepare(&self, req: PrepareRequest) -> Result<Box<dyn Sink>>;

    /// Whether runs in several processes (`pipe worker`s on many hosts) can commit to this
    /// table at once, each through the format's own concurrency control; `Err` says why not.
    /// The default: they can.
    fn many_writers(&self) -> Result<()> {
        Ok(())
    }

    /// The table operations (`pipe table history|inspect|optimize|vacuum|restore`) this
    /// destination offers. The default: none.
    fn operations(&self) -> Option<&dyn crate::operations::TableOperations> {
        None
    }
}

/// A destination table as `pipe inspect` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableInfo {
    /// The table, as the destination names it.
    pub table: String,
    /// Where its current version is recorded (metadata file, database file, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Its columns, in order.
    pub columns: Vec<ColumnInfo>,
    /// Layout facts: partition spec, sort order, format version, ...
    pub properties: std::collections::BTreeMap<String, String>,
    /// Rows in the current version, when known without scanning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Data files of the current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Bytes of data files of the current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The table's commits (snapshots, versions), oldest first.
    pub commits: Vec<CommitInfo>,
}

/// One column of a [`TableInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ColumnInfo {
    /// Its name.
    pub name: String,
    /// Its type, as the destination spells it.
    pub r#type: String,
    /// Its field id, where the format has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Whether NULL is refused.
    pub required: bool,
}

/// One commit of a table (`pipe table history`, [`TableInfo::commits`]): the same fields for
/// every destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    /// The commit's id (snapshot id, version).
    pub id: String,
    /// The commit it follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// When, RFC 3339 UTC.
    pub timestamp: String,
    /// What it did (`append`, `overwrite`, ...).
    pub operation: String,
    /// Whether it is the table's current version.
    pub current: bool,
    /// The pipeline that wrote it (`pipe.pipeline`), if pipe did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The run that wrote it (`pipe.run-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Rows in the table after the commit, when known without scanning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Data files in the table after the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Bytes of those data files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Everything else the format records (summary, metrics, parameters), by name.
    pub summary: std::collections::BTreeMap<String, String>,
}

/// One run's staged writes into a destination.
#[async_trait]
pub trait Sink: Send + Debug {
    /// The schema every batch given to [`Sink::write`] must have: the table's after
    /// evolution. The runtime converts source batches to it.
    fn schema(&self) -> SchemaRef;

    /// Stage one batch.
    async fn write(&mut self, batch: RecordBatch) -> Result<()>;

    /// Commit everything staged, together with the run's state, in one atomic step.
    async fn commit(self: Box<Self>, req: CommitRequest) -> Result<CommitReport>;

    /// Drop everything staged; the table stays as it was before the run.
    async fn abort(self: Box<Self>) -> Result<()>;

    /// `mode = "register"`: stage `files` (which already hold rows of the source's schema)
    /// to be added to the table by [`Sink::commit`] as they are. Files the table already
    /// references are skipped. In this mode [`Sink::write`] receives the new files' rows
    /// only when a stage checks them, and must drop them. The default: this destination
    /// cannot reference existing files.
    async fn register(&mut self, files: Vec<crate::source::ExistingFile>) -> Result<Registration> {
        let _ = files;
        Err(Error::user(
            "this destination cannot add existing files to a table (mode = \"register\")",
        ))
    }
}

/// What [`Sink::register`] staged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// Rows the staged files hold.
    pub rows: u64,
    /// The staged files: those the table did not reference yet.
    pub files: Vec<crate::source::ExistingFile>,
}

/// What the runtime hands to [`Sink::commit`].
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// The run.
    pub ctx: RunContext,
    /// Rows the source produced.
    pub rows_read: u64,
    /// What this run changes in the committed state (a cursor's new position, a finished
    /// backfill window), to commit with the data. Keys not named keep their value:
    /// [`Destination::committed_state`] returns, per key, the last committed value.
    pub state: State,
    /// Rows a contract quarantined, to commit with the data (only given to destinations
    /// whose [`Destination::check_quarantine`] accepted it).
    pub quarantine: Option<Quarantine>,
}

/// What a commit did, for the run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CommitReport {
    /// Rows added to the table.
    pub rows_inserted: u64,
    /// Existing rows changed (merge).
    pub rows_updated: u64,
    /// Existing rows removed (replace).
    pub rows_deleted: u64,
    /// Rows that matched an existing row with equal values (merge); nothing changed.
    pub rows_unchanged: u64,
    /// Rows written to the quarantine table.
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_quarantined: u64,
    /// Rows the destination received and dropped on purpose (the `null` destination).
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_discarded: u64,
    /// The destination's id of the commit (snapshot id, table version, ...), if it has one.
    /// `None` when there was nothing to commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_id: Option<String>,
    /// The run had no rows and no state to commit, so the destination was left untouched (no
    /// empty version or snapshot); the run is still recorded in the ledger.
    #[serde(skip_serializing_if = "is_false")]
    pub nothing_to_commit: bool,
    /// Problems after the commit landed (a failed checkpoint or maintenance step): the data
    /// is committed; these are for the user to know.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl CommitReport {
    /// The report of a run that left the destination untouched (no rows, no state).
    pub fn nothing() -> Self {
        Self {
            nothing_to_commit: true,
            ..Self::default()
        }
    }
}
