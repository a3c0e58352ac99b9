//! Transform stages between the metadata and load stages (the contract stage is one).

use std::fmt::Debug;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use serde::Serialize;

use crate::error::Result;

/// A stage transforming one batch at a time. Runs as its own task between two channels.
///
/// A stage may drop rows (a contract rejecting them) but keeps the schema: the output schema
/// is the input schema.
#[async_trait]
pub trait Stage: Send + Debug {
    /// Short name for logs and the summary, e.g. `contract`.
    fn name(&self) -> &str;

    /// Called once with the schema of the batches to come, before the first batch. An error
    /// here (a rule naming a missing column, say) stops the run before data moves.
    fn bind(&mut self, schema: &SchemaRef) -> Result<()>;

    /// Process one batch; `Ok(None)` drops it entirely.
    async fn process(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>>;

    /// Called after the last batch; a failing check over the whole run (row-count bounds,
    /// say) errors here, before anything is committed.
    async fn finish(&mut self) -> Result<StageReport>;
}

/// What a stage did, for the run summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageReport {
    /// The stage's name.
    pub stage: String,
    /// Rows that arrived.
    pub rows_in: u64,
    /// Rows that were passed on.
    pub rows_out: u64,
    /// Rows held back (rejected by a contract, filtered).
    pub rows_rejected: u64,
    /// Stage-specific detail (per-rule counts for a contract), as JSON.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}
