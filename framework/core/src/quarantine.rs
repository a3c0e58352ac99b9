//! Quarantined rows of a run, spooled to a temporary Arrow IPC file while the run streams (so
//! memory stays bounded however many rows break the contract) and handed to the destination
//! at commit time, which writes them in the same atomic commit as the good rows.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::Result;
use crate::spool::{BatchSpool, Spooled};
use crate::stage::QuarantineSpec;

/// Collects one run's quarantined batches on disk.
#[derive(Debug)]
pub(crate) struct Spool {
    table: Option<String>,
    spool: BatchSpool,
}

impl Spool {
    pub(crate) fn new(spec: QuarantineSpec) -> Result<Self> {
        Ok(Self {
            table: spec.table,
            spool: BatchSpool::new(spec.schema, "quarantine")?,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.spool.write(batch)
    }

    /// Finish writing; `None` if nothing was quarantined.
    pub(crate) fn finish(self) -> Result<Option<Quarantine>> {
        let spooled = self.spool.finish()?;
        if spooled.rows() == 0 {
            return Ok(None);
        }
        Ok(Some(Quarantine {
            table: self.table,
            schema: spooled.schema().clone(),
            rows: spooled.rows(),
            spooled,
        }))
    }
}

/// A run's quarantined rows, ready to commit (see `CommitRequest::quarantine`).
#[derive(Debug, Clone)]
pub struct Quarantine {
    /// The table they go to (`None`: the destination's default, `<table>_quarantine`).
    pub table: Option<String>,
    /// Their schema: the original columns plus `_pipe_rule`, `_pipe_reason`, `_pipe_run_id`
    /// and `_pipe_loaded_at`.
    pub schema: SchemaRef,
    /// How many.
    pub rows: u64,
    spooled: Spooled,
}

impl Quarantine {
    /// The batches, read back one at a time.
    pub fn batches(&self) -> Result<impl Iterator<Item = Result<RecordBatch>> + Send + 'static> {
        self.spooled.batches()
    }
}
