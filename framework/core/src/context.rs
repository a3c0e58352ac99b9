//! What every stage knows about the run it is part of.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// A pipeline's committed state: what the last successful run committed with its data
/// (cursor high-water marks, ...), by key. Sources own their keys (e.g. `cursor.updated_at`).
pub type State = BTreeMap<String, String>;

/// A backfill window: the source reads only rows with `start <= cursor < end`. The bounds are
/// SQL literals of the cursor column's type (`2024-01-01`, `1000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Inclusive lower bound.
    pub start: String,
    /// Exclusive upper bound.
    pub end: String,
}

impl Window {
    /// The state key recording that this window was committed.
    pub fn state_key(&self) -> String {
        format!("backfill.{}..{}", self.start, self.end)
    }
}

/// Identity and cancellation of one pipeline run; cloned into every stage.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The pipeline's `name` from its TOML file.
    pub pipeline: String,
    /// Unique id of this run (UUID v7: sortable by start time).
    pub run_id: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Cancelled when any stage fails or the user interrupts; long-running work must stop
    /// promptly once it fires.
    pub cancel: CancellationToken,
    /// The state the last successful run committed (empty on the first run). Set by the
    /// runtime from the destination before the source reads.
    pub committed: Arc<State>,
    /// Set for one window of a backfill: the source reads only that range of its cursor and
    /// leaves its incremental position alone.
    pub window: Option<Window>,
    /// How the run's rows land (`[destination] mode`): a source may re-read rows it cannot
    /// tell apart when the destination deduplicates them (merge).
    pub mode: crate::destination::WriteMode,
}

impl RunContext {
    /// A context for a new run of `pipeline`.
    pub fn new(pipeline: impl Into<String>) -> Self {
        Self {
            pipeline: pipeline.into(),
            run_id: uuid::Uuid::now_v7().to_string(),
            started_at: Utc::now(),
            cancel: CancellationToken::new(),
            committed: Arc::new(State::new()),
            window: None,
            mode: crate::destination::WriteMode::default(),
        }
    }
}
