//! `type = "null"`: a destination that drops every batch — for measuring a source alone
//! (benchmarks) and for `pipe run` dry runs of a pipeline's extract and contract stages.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use serde::Deserialize;

use crate::destination::{
    CommitReport, CommitRequest, Destination, PrepareRequest, Sink, WriteMode,
};
use crate::error::Result;
use crate::registry::{BuildContext, DestinationFactory};

/// The `[destination]` table of `type = "null"`: no keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullConfig {}

/// Registers as `type = "null"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullFactory;

impl DestinationFactory for NullFactory {
    type Config = NullConfig;

    fn description(&self) -> &'static str {
        "discards every row (benchmarks, dry runs); commits nothing"
    }

    fn modes(&self) -> &'static [WriteMode] {
        &WriteMode::ALL
    }

    fn build(&self, _config: NullConfig, _ctx: &BuildContext) -> Result<Arc<dyn Destination>> {
        Ok(Arc::new(NullDestination))
    }
}

/// Drops everything.
#[derive(Debug, Clone, Copy)]
pub struct NullDestination;

#[derive(Debug)]
struct NullSink {
    schema: SchemaRef,
    rows: u64,
}

#[async_trait]
impl Destination for NullDestination {
    fn describe(&self) -> String {
        "null".into()
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }

    fn check_quarantine(&self, _spec: &crate::stage::QuarantineSpec) -> Result<()> {
        Ok(())
    }

    async fn prepare(&self, req: PrepareRequest) -> Result<Box<dyn Sink>> {
        Ok(Box::new(NullSink {
            schema: req.source_schema,
            rows: 0,
        }))
    }
}

#[async_trait]
impl Sink for NullSink {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    async fn commit(self: Box<Self>, req: CommitRequest) -> Result<CommitReport> {
        // Nothing lands anywhere: the rows are discarded, none inserted.
        Ok(CommitReport {
            rows_discarded: self.rows + req.quarantine.map_or(0, |q| q.rows),
            ..Default::default()
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
