//! The extract stage: a [`Source`] produces record batches of one schema.

use std::fmt::Debug;

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use serde::Serialize;

use crate::channel::BatchSender;
use crate::context::{RunContext, State};
use crate::error::Result;

/// A source of record batches. Implemented by every source crate.
///
/// The runtime calls [`Source::schema`] first (before any data moves, so the metadata stage
/// can create or evolve the destination table), then [`Source::read`] once.
#[async_trait]
pub trait Source: Send + Sync + Debug {
    /// What this source reads, for messages: `file data/orders.csv`, `postgres table
    /// public.orders`. Must not print secrets.
    fn describe(&self) -> String {
        "the source".to_string()
    }

    /// The schema of every batch [`Source::read`] will send. Opens files / asks the service,
    /// but moves no data.
    async fn schema(&self) -> Result<SchemaRef>;

    /// The schema of one run's batches, knowing its context (the committed state, a
    /// backfill window): what the runtime asks before a run. A source whose schema depends on
    /// what the run reads (an API's records, inferred from the run's first pages) overrides
    /// this; the default is [`Source::schema`].
    async fn run_schema(&self, ctx: &RunContext) -> Result<SchemaRef> {
        let _ = ctx;
        self.schema().await
    }

    /// Send every batch into `out`, in order, then return what was read. Must stop soon
    /// after `ctx.cancel` fires or `out.send` fails. An incremental source reads its position
    /// from `ctx.committed` and returns the new one in [`SourceReport::state`].
    async fn read(&self, ctx: &RunContext, out: BatchSender) -> Result<SourceReport>;

    /// Whether this source keeps state between runs (an incremental cursor): the runtime then
    /// requires a destination that commits state with its data, and refuses `replace` (each
    /// run would replace the table with only the new rows).
    fn is_incremental(&self) -> bool {
        false
    }

    /// Whether a run may read rows an earlier run already loaded (a `lookback` window): the
    /// runtime then requires `merge` mode, which deduplicates them.
    fn rereads_rows(&self) -> bool {
        false
    }

    /// Whether this source can read just a window of its cursor (backfills).
    fn supports_windows(&self) -> bool {
        false
    }

    /// The files that hold this source's rows as they are, for `mode = "register"` (added
    /// to the destination table without being read). `Ok(None)`, the default: this source
    /// cannot hand over files.
    async fn existing_files(&self) -> Result<Option<Vec<ExistingFile>>> {
        Ok(None)
    }

    /// Read the rows of `files` only (some of [`Source::existing_files`]): a register run
    /// whose contract checks the new files' rows. The default: this source cannot.
    async fn read_files(
        &self,
        ctx: &RunContext,
        files: &[ExistingFile],
        out: BatchSender,
    ) -> Result<SourceReport> {
        let _ = (ctx, files, out);
        Err(crate::error::Error::user(
            "this source cannot read a subset of its files",
        ))
    }
}

/// A file that already holds rows, as [`Source::existing_files`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ExistingFile {
    /// Its absolute location as table formats record it: `file:///abs/path` for a local
    /// file, else the object-store URL (`s3://bucket/key`).
    pub location: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its format, lower case (`parquet`).
    pub format: String,
}

/// What a source read, for the run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    /// Bytes read from storage or the network (compressed size where applicable).
    pub bytes_read: u64,
    /// Files, pages or partitions read.
    pub parts: u64,
    /// State to commit with this run's data (the new cursor position); merged over the
    /// previously committed state.
    #[serde(skip_serializing_if = "State::is_empty")]
    pub state: State,
    /// What the user should know about the read that did not stop it (rows a cursor can
    /// never reach, say); printed with the run summary.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What a source prepares in [`Source::run_schema`] for the [`Source::read`] of the same run
/// (the first pages an inferred schema came from, a started program), by run id: runs of one
/// source may overlap (parallel backfill windows). At most [`RunSlots::CAPACITY`] are kept,
/// the oldest dropped first (a run that never reads — `pipe check` — leaves its entry).
#[derive(Debug)]
pub struct RunSlots<T> {
    slots: std::sync::Mutex<std::collections::VecDeque<(String, T)>>,
}

impl<T> Default for RunSlots<T> {
    fn default() -> Self {
        Self {
            slots: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

impl<T> RunSlots<T> {
    /// Entries kept at most.
    pub const CAPACITY: usize = 64;

    /// Keep `value` for the run `run_id` (replacing one it had).
    pub fn put(&self, run_id: &str, value: T) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|(id, _)| id != run_id);
        if slots.len() == Self::CAPACITY {
            slots.pop_front();
        }
        slots.push_back((run_id.to_string(), value));
    }

    /// The value kept for `run_id`, removed.
    pub fn take(&self, run_id: &str) -> Option<T> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let at = slots.iter().position(|(id, _)| id == run_id)?;
        slots.remove(at).map(|(_, value)| value)
    }
}
