//! Transform stages between the metadata and load stages (the contract stage is one).

use std::fmt::Debug;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use serde::Serialize;

use crate::context::RunContext;
use crate::error::Result;

/// A stage transforming one batch at a time. Runs as its own task between two channels.
///
/// A stage may hold rows back (a contract rejecting them) but keeps the schema: the output
/// schema is the input schema. Rows it quarantines go to a side output that the destination
/// commits together with the run (see [`Stage::quarantine`]).
#[async_trait]
pub trait Stage: Send + Debug {
    /// Short name for logs and the summary, e.g. `contract`.
    fn name(&self) -> &str;

    /// Called once with the schema of the batches to come, before the first batch. An error
    /// here (a rule naming a missing column, say) stops the run before data moves.
    fn bind(&mut self, schema: &SchemaRef, ctx: &RunContext) -> Result<()>;

    /// Where this stage's quarantined rows go, if it quarantines any (called after
    /// [`Stage::bind`]). The runtime refuses, before data moves, a destination that cannot
    /// commit them with the run.
    fn quarantine(&self) -> Option<QuarantineSpec> {
        None
    }

    /// Process one batch.
    async fn process(&mut self, batch: RecordBatch) -> Result<StageOutput>;

    /// Called after the last batch; a failing check over the whole run (row-count bounds,
    /// say) errors here, before anything is committed.
    async fn finish(&mut self) -> Result<StageReport>;
}

/// What [`Stage::process`] made of one batch.
#[derive(Debug, Default)]
pub struct StageOutput {
    /// Rows passed on (`None`: none).
    pub pass: Option<RecordBatch>,
    /// Rows set aside, in the [`QuarantineSpec::schema`] (`None`: none).
    pub quarantine: Option<RecordBatch>,
}

impl StageOutput {
    /// Pass `batch` on unchanged.
    pub fn pass(batch: RecordBatch) -> Self {
        Self {
            pass: Some(batch),
            quarantine: None,
        }
    }

    /// Pass nothing on.
    pub fn none() -> Self {
        Self::default()
    }
}

/// A stage's quarantine: rows that broke a rule, with the reasons, committed next to the
/// destination table in the same run.
#[derive(Debug, Clone)]
pub struct QuarantineSpec {
    /// The table to put them in (`None`: the destination's default, `<table>_quarantine`).
    pub table: Option<String>,
    /// The schema of the quarantined batches.
    pub schema: SchemaRef,
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
    /// Rows held back (dropped or quarantined by a contract, filtered).
    pub rows_rejected: u64,
    /// Of `rows_rejected`, those set aside in the quarantine.
    pub rows_quarantined: u64,
    /// Stage-specific detail (per-rule counts for a contract), as JSON.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}
