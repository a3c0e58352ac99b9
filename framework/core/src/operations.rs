//! Table operations beyond loading — history, inspect (time travel), optimize (compaction),
//! vacuum (expiring old commits and deleting what nothing references), restore — as one
//! capability every table destination implements as far as its format allows
//! ([`crate::Destination::operations`]). `pipe table <verb>` drives them without knowing the
//! destination; an operation a destination cannot do is an error saying so.
//!
//! The `pipe.*` keys pipe writes into every format's commit metadata (Iceberg snapshot
//! summaries, Delta `commitInfo`, DuckDB's ledger) are in [`keys`].

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::destination::TableInfo;
use crate::error::{Error, Result};

/// The keys pipe writes into commit metadata, the same in every format.
pub mod keys {
    /// The pipeline that wrote the commit.
    pub const PIPELINE: &str = "pipe.pipeline";
    /// The run that wrote it (a UUID v7).
    pub const RUN_ID: &str = "pipe.run-id";
    /// The pipeline's run sequence number (Delta: the `txn` version).
    pub const RUN_SEQ: &str = "pipe.run-seq";
    /// The pipeline's whole state after the commit, one key per state key
    /// (`pipe.state.cursor.updated_at`), or as one JSON object under `pipe.state` where the
    /// format stores objects (Delta `commitInfo`).
    pub const STATE: &str = "pipe.state";
}

/// What `pipe table history` lists for every commit.
pub type Commit = crate::destination::CommitInfo;

/// `pipe table optimize`: compact small data files.
#[derive(Debug, Clone, Default)]
pub struct OptimizeRequest {
    /// The size files are compacted to (default: the destination's `target_file_size_mb`).
    pub target_file_size: Option<u64>,
    /// Cluster the rewritten rows by these columns (Z-order where the format has it, else a
    /// sort); empty: the table's own sort order, if any.
    pub order_by: Vec<String>,
    /// Only say what would be compacted.
    pub dry_run: bool,
}

/// `pipe table vacuum`: forget old commits and delete the files nothing references.
#[derive(Debug, Clone)]
pub struct VacuumRequest {
    /// Commits (and unreferenced files) older than this go.
    pub older_than: DateTime<Utc>,
    /// Keep at least this many of the newest commits, however old (at least 1: the current).
    pub retain_last: usize,
    /// Also delete files under the table that no commit ever referenced (left by crashed
    /// writers of other engines), older than `older_than`.
    pub orphans: bool,
    /// Only list what would go.
    pub dry_run: bool,
    /// Refuse a retention below the table's own minimum (Delta's
    /// `delta.deletedFileRetentionDuration`): readers of older commits need those files.
    pub enforce_retention: bool,
}

/// `pipe table restore`: which earlier commit.
#[derive(Debug, Clone)]
pub enum RestoreTarget {
    /// A commit id (a Delta version, an Iceberg snapshot id).
    Commit(String),
    /// The commit that was current at this time.
    Timestamp(DateTime<Utc>),
}

/// What an operation did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OperationReport {
    /// The operation (`optimize`, `vacuum`, `restore`).
    pub operation: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// The commit the operation made, if it made one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_id: Option<String>,
    /// Data files added to the table.
    pub files_added: u64,
    /// Data files removed from the table.
    pub files_removed: u64,
    /// Commits (snapshots, versions) forgotten.
    pub commits_removed: u64,
    /// Files deleted from storage (or that would be).
    pub deleted: Vec<String>,
    /// Anything else worth reporting, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub detail: BTreeMap<String, String>,
}

/// The operations on a destination's table.
#[async_trait]
pub trait TableOperations: Send + Sync + Debug {
    /// The table's commits, newest first (at most `limit`). Empty when there is no table.
    async fn history(&self, limit: Option<usize>) -> Result<Vec<Commit>>;

    /// The table as it is, or as of commit `at` (time travel); `None` when there is no table.
    async fn inspect(&self, at: Option<&str>) -> Result<Option<TableInfo>>;

    /// Compact small data files (same rows, one commit).
    async fn optimize(&self, request: &OptimizeRequest) -> Result<OperationReport> {
        let _ = request;
        Err(unsupported("optimize"))
    }

    /// Forget old commits and delete what nothing references any more.
    async fn vacuum(&self, request: &VacuumRequest) -> Result<OperationReport> {
        let _ = request;
        Err(unsupported("vacuum"))
    }

    /// Make the table's content that of an earlier commit.
    async fn restore(&self, to: &RestoreTarget) -> Result<OperationReport> {
        let _ = to;
        Err(unsupported("restore"))
    }
}

/// The error of an operation a destination does not have.
pub fn unsupported(operation: &str) -> Error {
    Error::user(format!("this destination has no `{operation}` operation"))
}

/// A commit id given on the command line that names no commit of the table.
pub fn no_such_commit(id: &str, known: impl Iterator<Item = String>) -> Error {
    let known: Vec<String> = known.take(10).collect();
    Error::user(format!(
        "the table has no commit `{id}`; recent commits: {}",
        known.join(", ")
    ))
}
