//! Several [`DataWriter`]s fed round-robin, each on its own task (the framework's
//! [`RoundRobin`]): Parquet encoding and compression are the expensive part of a load, and one
//! writer keeps one core busy.

use arrow_array::RecordBatch;
use iceberg::spec::DataFile;
use pipe_framework::parallel::RoundRobin;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::write::DataWriter;

/// The run's data file writers.
#[derive(Debug)]
pub(crate) struct ParallelWriter {
    inner: RoundRobin<Vec<DataFile>>,
    rows: u64,
}

async fn drive(
    mut writer: DataWriter,
    mut rx: mpsc::Receiver<RecordBatch>,
) -> pipe_framework::Result<Vec<DataFile>> {
    while let Some(batch) = rx.recv().await {
        writer.write(batch).await?;
    }
    Ok(writer.close().await?)
}

impl ParallelWriter {
    /// Start one task per writer.
    pub(crate) fn new(writers: Vec<DataWriter>) -> Self {
        let mut writers = writers.into_iter();
        let n = writers.len();
        let inner = RoundRobin::spawn(n, |_, rx| {
            let writer = writers.next();
            async move {
                match writer {
                    Some(w) => drive(w, rx).await,
                    None => Err(pipe_framework::Error::internal("no data file writer")),
                }
            }
        });
        Self { inner, rows: 0 }
    }

    /// Hand one batch (of the table's write schema) to the next writer.
    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        Ok(self.inner.write(batch).await?)
    }

    /// Rows handed out so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Finish every writer; all their files, or the first error.
    pub(crate) async fn close(self) -> Result<Vec<DataFile>> {
        Ok(self.inner.close().await?.into_iter().flatten().collect())
    }
}
