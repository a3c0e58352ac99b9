//! Several [`DataWriter`]s fed round-robin, each on its own task: Parquet encoding and
//! compression are the expensive part of a load, and one writer keeps one core busy.

use arrow_array::RecordBatch;
use iceberg::spec::DataFile;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{IcebergError, Result};
use crate::write::DataWriter;

/// Batches in flight per writer.
const DEPTH: usize = 2;

type Task = JoinHandle<Result<Vec<DataFile>>>;

/// The run's data file writers.
#[derive(Debug)]
pub(crate) struct ParallelWriter {
    senders: Vec<mpsc::Sender<RecordBatch>>,
    tasks: Vec<Task>,
    next: usize,
    rows: u64,
}

async fn drive(
    mut writer: DataWriter,
    mut rx: mpsc::Receiver<RecordBatch>,
) -> Result<Vec<DataFile>> {
    while let Some(batch) = rx.recv().await {
        writer.write(batch).await?;
    }
    writer.close().await
}

fn joined(
    result: std::result::Result<Result<Vec<DataFile>>, tokio::task::JoinError>,
) -> Result<Vec<DataFile>> {
    result.map_err(|e| IcebergError::Internal(format!("a data file writer stopped: {e}")))?
}

impl ParallelWriter {
    /// Start one task per writer.
    pub(crate) fn new(writers: Vec<DataWriter>) -> Self {
        let (senders, tasks) = writers
            .into_iter()
            .map(|w| {
                let (tx, rx) = mpsc::channel(DEPTH);
                (tx, tokio::spawn(drive(w, rx)))
            })
            .unzip();
        Self {
            senders,
            tasks,
            next: 0,
            rows: 0,
        }
    }

    /// Hand one batch (of the table's write schema) to the next writer.
    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        let i = self.next % self.senders.len().max(1);
        self.next = self.next.wrapping_add(1);
        let Some(sender) = self.senders.get(i) else {
            return Err(IcebergError::Internal("no data file writer".into()));
        };
        if sender.send(batch).await.is_err() {
            // The writer failed: its task holds the error.
            let task = self.tasks.swap_remove(i);
            self.senders.swap_remove(i);
            joined(task.await)?;
            return Err(IcebergError::Internal(
                "a data file writer stopped early".into(),
            ));
        }
        Ok(())
    }

    /// Rows handed out so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Finish every writer; all their files, or the first error.
    pub(crate) async fn close(self) -> Result<Vec<DataFile>> {
        drop(self.senders);
        let mut files = Vec::new();
        let mut first_error = None;
        for task in self.tasks {
            match joined(task.await) {
                Ok(mut f) => files.append(&mut f),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(files),
        }
    }
}
