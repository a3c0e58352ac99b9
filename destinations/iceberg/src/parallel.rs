//! Several [`DataWriter`]s, each on its own task (the framework's [`RoundRobin`]): Parquet
//! encoding and compression are the expensive part of a load, and one writer keeps one core
//! busy. Fed batch by batch in turn, or, for clustered rows, a key-range segment at a time,
//! each segment closing the writer's files (so files hold disjoint key ranges).

use arrow_array::RecordBatch;
use iceberg::spec::DataFile;
use pipe_framework::parallel::{Piece, RoundRobin};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::write::DataFiles;

/// The run's data file writers.
#[derive(Debug)]
pub(crate) struct ParallelWriter {
    inner: RoundRobin<Vec<DataFile>>,
    rows: u64,
}

/// Writer `name`'s task: a new set of files after every cut.
async fn drive(
    files: DataFiles,
    name: String,
    mut rx: mpsc::Receiver<Piece>,
) -> pipe_framework::Result<Vec<DataFile>> {
    let mut done = Vec::new();
    let mut segment = 0;
    let mut writer = files.open(&name)?;
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Rows(batch, _held) => writer.write(batch).await?,
            Piece::Cut => {
                segment += 1;
                let next = files.open(&format!("{name}s{segment}"))?;
                done.extend(std::mem::replace(&mut writer, next).close().await?);
            }
        }
    }
    done.extend(writer.close().await?);
    Ok(done)
}

impl ParallelWriter {
    /// Start `writers` tasks writing `files`, fed in turn, or by key-range segments of
    /// `segment_bytes` when the rows come sorted (`Some`).
    pub(crate) fn new(files: &DataFiles, writers: usize, segment_bytes: Option<usize>) -> Self {
        let start = |i: usize, rx| drive(files.clone(), i.to_string(), rx);
        let inner = match segment_bytes {
            Some(bytes) => RoundRobin::clustered(writers, bytes, start),
            None => RoundRobin::spawn(writers, start),
        };
        Self { inner, rows: 0 }
    }

    /// Hand one batch (of the table's write schema) to a writer.
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
