//! Several [`DataWriter`]s, each on its own task (the framework's [`RoundRobin`]): Parquet
//! encoding and compression are the expensive part of a load, and one writer keeps one core
//! busy. Fed batch by batch in turn, or, for clustered rows, a key-range segment at a time,
//! each segment closing the writer's files (so files hold disjoint key ranges). The writers
//! start once the first rows came: a sample of them picks the columns written without a
//! dictionary.

use std::sync::Arc;

use arrow_array::RecordBatch;
use iceberg::spec::DataFile;
use pipe_framework::parallel::{Piece, RoundRobin};
use pipe_framework::parquet_options::SampledWriters;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::write::DataFiles;

/// The run's data file writers.
#[derive(Debug)]
pub(crate) struct ParallelWriter {
    setup: Setup,
    /// The writers, started once the first rows came.
    running: SampledWriters<Vec<DataFile>>,
    rows: u64,
}

/// What the writers need to start.
#[derive(Debug)]
struct Setup {
    /// Where and how the files are written.
    files: DataFiles,
    /// Writer tasks.
    writers: usize,
    /// Clustered: the writers take sorted rows a key-range segment at a time.
    segment_bytes: Option<usize>,
}

impl Setup {
    /// The writer tasks, writing the columns in `plain` without a dictionary.
    fn start(&self, plain: Vec<String>) -> RoundRobin<Vec<DataFile>> {
        let plain: Arc<[String]> = plain.into();
        let start = |i: usize, rx| drive(self.files.clone(), Arc::clone(&plain), i.to_string(), rx);
        RoundRobin::new(self.writers, self.segment_bytes, start)
    }
}

/// Writer `name`'s task (the columns in `plain` without a dictionary): a new set of files
/// after every cut.
async fn drive(
    files: DataFiles,
    plain: Arc<[String]>,
    name: String,
    mut rx: mpsc::Receiver<Piece>,
) -> pipe_framework::Result<Vec<DataFile>> {
    let mut done = Vec::new();
    let mut segment = 0;
    let mut writer = files.open(&name, &plain)?;
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Rows(batch, _held) => writer.write(batch).await?,
            Piece::Cut => {
                segment += 1;
                let next = files.open(&format!("{name}s{segment}"), &plain)?;
                done.extend(std::mem::replace(&mut writer, next).close().await?);
            }
        }
    }
    done.extend(writer.close().await?);
    Ok(done)
}

impl ParallelWriter {
    /// `writers` tasks writing `files`, fed in turn, or by key-range segments of
    /// `segment_bytes` when the rows come sorted (`Some`); they start once the first rows
    /// came.
    pub(crate) fn new(files: DataFiles, writers: usize, segment_bytes: Option<usize>) -> Self {
        Self {
            running: SampledWriters::new(files.options.row_group_rows),
            setup: Setup {
                files,
                writers,
                segment_bytes,
            },
            rows: 0,
        }
    }

    /// Hand one batch (of the table's write schema) to a writer.
    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        let setup = &self.setup;
        Ok(self
            .running
            .write(batch, |plain| setup.start(plain))
            .await?)
    }

    /// Rows handed out so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Finish every writer; all their files, or the first error (none if no row came).
    pub(crate) async fn close(self) -> Result<Vec<DataFile>> {
        let setup = &self.setup;
        let done = self.running.close(|plain| setup.start(plain)).await?;
        Ok(done.into_iter().flatten().collect())
    }
}
