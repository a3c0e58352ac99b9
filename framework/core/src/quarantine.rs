//! Quarantined rows of a run, spooled to a temporary Arrow IPC file while the run streams (so
//! memory stays bounded however many rows break the contract) and handed to the destination
//! at commit time, which writes them in the same atomic commit as the good rows.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;

use crate::error::{Error, Result};
use crate::stage::QuarantineSpec;

/// Collects one run's quarantined batches on disk.
pub(crate) struct Spool {
    spec: QuarantineSpec,
    file: tempfile::NamedTempFile,
    writer: FileWriter<BufWriter<File>>,
    rows: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("file", &self.file.path())
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl Spool {
    pub(crate) fn new(spec: QuarantineSpec) -> Result<Self> {
        let file = tempfile::Builder::new()
            .prefix("pipe-quarantine-")
            .suffix(".arrow")
            .tempfile()
            .map_err(|e| Error::from(e).context("creating the quarantine spool file"))?;
        let handle = file
            .reopen()
            .map_err(|e| Error::from(e).context("opening the quarantine spool file"))?;
        let writer = FileWriter::try_new(BufWriter::new(handle), &spec.schema)?;
        Ok(Self {
            spec,
            file,
            writer,
            rows: 0,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema() != self.spec.schema {
            return Err(Error::internal(
                "a quarantined batch does not have the stage's quarantine schema",
            ));
        }
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch)?;
        Ok(())
    }

    /// Finish writing; `None` if nothing was quarantined.
    pub(crate) fn finish(mut self) -> Result<Option<Quarantine>> {
        self.writer.finish()?;
        if self.rows == 0 {
            return Ok(None);
        }
        Ok(Some(Quarantine {
            table: self.spec.table,
            schema: self.spec.schema,
            rows: self.rows,
            file: Arc::new(self.file),
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
    file: Arc<tempfile::NamedTempFile>,
}

impl Quarantine {
    /// The batches, read back one at a time.
    pub fn batches(&self) -> Result<impl Iterator<Item = Result<RecordBatch>> + Send + 'static> {
        let file = self
            .file
            .reopen()
            .map_err(|e| Error::from(e).context("reading the quarantine spool file"))?;
        let reader = FileReader::try_new(BufReader::new(file), None)?;
        Ok(reader.map(|b| b.map_err(Error::from)))
    }
}
