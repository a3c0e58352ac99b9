//! Live progress counters and the end-of-run summary.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::destination::CommitReport;
use crate::error::{Error, ErrorKind};
use crate::stage::StageReport;

/// Counters the runtime updates while a run is in flight; a progress bar polls them.
#[derive(Debug, Default)]
pub struct RunProgress {
    rows_read: AtomicU64,
    rows_written: AtomicU64,
}

impl RunProgress {
    /// Rows that left the source so far.
    pub fn rows_read(&self) -> u64 {
        self.rows_read.load(Ordering::Relaxed)
    }

    /// Rows staged into the destination so far (visible only after the commit).
    pub fn rows_written(&self) -> u64 {
        self.rows_written.load(Ordering::Relaxed)
    }

    /// Start counting again (a retry).
    pub fn reset(&self) {
        self.rows_read.store(0, Ordering::Relaxed);
        self.rows_written.store(0, Ordering::Relaxed);
    }

    pub(crate) fn add_read(&self, rows: usize) {
        self.rows_read.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_written(&self, rows: usize) {
        self.rows_written.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Everything committed.
    Succeeded,
    /// Nothing committed; see `error`.
    Failed,
    /// Interrupted; nothing committed.
    Cancelled,
    /// The commit failed in a way that leaves its outcome unknown (the destination may have
    /// taken it); the run's files were kept. The next run reconciles.
    Unknown,
}

/// A failed run's error, as the summary reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorSummary {
    /// user / external / internal / cancelled.
    pub kind: ErrorKind,
    /// The outermost message followed by every cause.
    pub chain: Vec<String>,
}

impl From<&Error> for ErrorSummary {
    fn from(e: &Error) -> Self {
        Self {
            kind: e.kind(),
            chain: e.chain(),
        }
    }
}

/// The end-of-run summary (`pipe run --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Pipeline name.
    pub pipeline: String,
    /// Run id.
    pub run_id: String,
    /// Outcome.
    pub status: RunStatus,
    /// Destination description.
    pub destination: String,
    /// Write mode.
    pub mode: String,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Rows the source produced.
    pub rows_read: u64,
    /// Rows committed to the destination (0 unless the run succeeded).
    pub rows_written: u64,
    /// Rows held back by stages (contract violations), quarantined ones included.
    pub rows_rejected: u64,
    /// Of `rows_rejected`, those committed to the quarantine table.
    pub rows_quarantined: u64,
    /// Bytes the source read from storage or the network.
    pub bytes_read: u64,
    /// `rows_read / seconds`.
    pub rows_per_second: f64,
    /// What the commit did, if the run got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitReport>,
    /// Per-stage reports (contract rules, ...).
    pub stages: Vec<StageReport>,
    /// Why the run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorSummary>,
    /// Things the user should know that did not stop the run (from the source; the
    /// commit's own are in `commit.warnings`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
