//! Several [`DataWriter`]s, each on its own task (the framework's [`RoundRobin`]): Parquet
//! encoding and compression are the expensive part of a load, and one writer keeps one core
//! busy. Fed batch by batch in turn, or, for clustered rows, a key-range segment at a time,
//! each segment closing the writer's files (so files hold disjoint key ranges). The writers
//! start once the first rows came: a sample of them picks the columns written without a
//! dictionary.

use arrow_array::RecordBatch;
use iceberg::spec::DataFile;
use pipe_framework::parallel::{Piece, RoundRobin};
use pipe_framework::parquet_options::{FirstRows, Sampled};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::write::DataFiles;

/// The run's data file writers.
#[derive(Debug)]
pub(crate) struct ParallelWriter {
    /// Where and how the files are written.
    files: DataFiles,
    /// Writer tasks.
    writers: usize,
    /// Clustered: the writers take sorted rows a key-range segment at a time.
    segment_bytes: Option<usize>,
    /// The first rows, until the writers start.
    first: FirstRows,
    /// The writers, once the first rows came.
    running: Option<RoundRobin<Vec<DataFile>>>,
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
    /// `writers` tasks writing `files`, fed in turn, or by key-range segments of
    /// `segment_bytes` when the rows come sorted (`Some`); they start with the first batch.
    pub(crate) fn new(files: DataFiles, writers: usize, segment_bytes: Option<usize>) -> Self {
        Self {
            files,
            writers,
            segment_bytes,
            first: FirstRows::default(),
            running: None,
            rows: 0,
        }
    }

    /// Start the writers with the first rows, once they came.
    async fn start(&mut self, sampled: Option<Sampled>) -> Result<()> {
        let Some(Sampled { plain, batches }) = sampled else {
            return Ok(());
        };
        if !plain.is_empty() {
            tracing::debug!(columns = ?plain, "writing without dictionary encoding");
        }
        let files = DataFiles {
            plain,
            ..self.files.clone()
        };
        let start = |i: usize, rx| drive(files.clone(), i.to_string(), rx);
        let writers = self.running.insert(match self.segment_bytes {
            Some(bytes) => RoundRobin::clustered(self.writers, bytes, start),
            None => RoundRobin::spawn(self.writers, start),
        });
        for batch in batches {
            writers.write(batch).await?;
        }
        Ok(())
    }

    /// Hand one batch (of the table's write schema) to a writer.
    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        if let Some(writers) = &mut self.running {
            return Ok(writers.write(batch).await?);
        }
        let sampled = self.first.push(batch, self.files.options.row_group_rows)?;
        self.start(sampled).await
    }

    /// Rows handed out so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Finish every writer; all their files, or the first error (none if no row came).
    pub(crate) async fn close(mut self) -> Result<Vec<DataFile>> {
        let sampled = self.first.finish(self.files.options.row_group_rows)?;
        self.start(sampled).await?;
        let Some(writers) = self.running else {
            return Ok(Vec::new());
        };
        Ok(writers.close().await?.into_iter().flatten().collect())
    }
}
