//! A run's writers: `writers` tasks fed round-robin ([`RoundRobin`]), each splitting its
//! batches by partition and keeping one open file per partition (at most `max_open_files`;
//! past that the largest is finished), rolling to a new file at the target size. Files go to
//! the run's staging prefix under their final relative path; the commit publishes them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use object_store::ObjectStore;
use object_store::path::Path;
use pipe_framework::Result;
use pipe_framework::parallel::{Piece, RoundRobin};
use pipe_framework::parquet_options::{SampledWriters, WriterSettings};
use tokio::sync::mpsc;

use crate::encode::{Encoding, OpenFile};
use crate::log::DataFile;
use crate::partition::Splitter;

/// What every writer task shares.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// Where staged files go.
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The run's staging prefix (files keep their relative path under it).
    pub(crate) staging: Path,
    /// The files' schema (the table's without partition columns).
    pub(crate) file_schema: SchemaRef,
    /// Partition split.
    pub(crate) splitter: Splitter,
    /// Format and its settings (Parquet properties chosen once the first rows came).
    pub(crate) encoding: Encoding,
    /// Sizes and parallelism.
    pub(crate) settings: WriterSettings,
    /// Open files per writer.
    pub(crate) max_open_files: usize,
    /// Unique file name stem of this run (`part-<run id>`).
    pub(crate) stem: String,
    /// What staged file names end with after the extension (object stores: `.staged`, so
    /// globbing readers never match a file before it is published).
    pub(crate) staged_suffix: &'static str,
}

/// The run's writers, started when the first rows came.
#[derive(Debug)]
pub(crate) struct Writers {
    setup: Arc<Setup>,
    writers: SampledWriters<Vec<DataFile>>,
}

impl Writers {
    pub(crate) fn new(setup: Setup) -> Self {
        let rows = setup.settings.row_group_rows;
        Self {
            setup: Arc::new(setup),
            writers: SampledWriters::new(rows),
        }
    }

    fn start(setup: &Arc<Setup>, plain: Vec<String>) -> RoundRobin<Vec<DataFile>> {
        let mut setup_for_run = Setup::clone(setup);
        setup_for_run.encoding = match &setup.encoding {
            Encoding::Parquet(_) => Encoding::Parquet(Box::new(setup.settings.properties(&plain))),
            other => other.clone(),
        };
        let shared = Arc::new(setup_for_run);
        RoundRobin::new(shared.settings.writers, None, |n, rx| {
            drive(Arc::clone(&shared), n, rx)
        })
    }

    /// Hand one batch (of the table's schema) to the next writer.
    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let setup = &self.setup;
        self.writers
            .write(batch, |plain| Self::start(setup, plain))
            .await
    }

    /// Finish every writer: the files written (none if no row came).
    pub(crate) async fn close(self) -> Result<Vec<DataFile>> {
        let setup = &self.setup;
        let files = self
            .writers
            .close(|plain| Self::start(setup, plain))
            .await?;
        Ok(files.into_iter().flatten().collect())
    }
}

/// One writer task's open files, by partition directory.
struct Partitions {
    setup: Arc<Setup>,
    writer: usize,
    open: HashMap<String, (String, OpenFile)>,
    done: Vec<DataFile>,
    files: usize,
}

impl Partitions {
    fn file_name(&mut self, partition: &str) -> String {
        self.files += 1;
        let name = format!(
            "{}-{}-{:05}.{}",
            self.setup.stem,
            self.writer,
            self.files,
            self.setup.encoding.extension()
        );
        if partition.is_empty() {
            name
        } else {
            format!("{partition}/{name}")
        }
    }

    fn staged(&self, relative: &str) -> Result<Path> {
        crate::location::join(
            &self.setup.staging,
            &format!("{relative}{}", self.setup.staged_suffix),
        )
    }

    async fn write(&mut self, partition: String, rows: RecordBatch) -> Result<()> {
        if !self.open.contains_key(&partition) {
            if self.open.len() >= self.setup.max_open_files {
                self.finish_largest().await?;
            }
            let relative = self.file_name(&partition);
            let file = OpenFile::open(
                Arc::clone(&self.setup.store),
                self.staged(&relative)?,
                self.setup.file_schema.clone(),
                &self.setup.encoding,
            )?;
            self.open.insert(partition.clone(), (relative, file));
        }
        let full = match self.open.get_mut(&partition) {
            Some((_, file)) => {
                file.write(&rows).await?;
                file.size() >= self.setup.settings.target_file_size
            }
            None => false,
        };
        if full {
            self.finish(&partition).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, partition: &str) -> Result<()> {
        if let Some((relative, file)) = self.open.remove(partition) {
            let rows = file.rows;
            let bytes = file.close().await?;
            self.done.push(DataFile {
                path: relative,
                partition: partition.to_string(),
                rows,
                bytes,
            });
        }
        Ok(())
    }

    async fn finish_largest(&mut self) -> Result<()> {
        let largest = self
            .open
            .iter()
            .max_by_key(|(_, (_, f))| f.size())
            .map(|(p, _)| p.clone());
        match largest {
            Some(p) => self.finish(&p).await,
            None => Ok(()),
        }
    }

    async fn finish_all(&mut self) -> Result<()> {
        let partitions: Vec<String> = self.open.keys().cloned().collect();
        for p in partitions {
            self.finish(&p).await?;
        }
        Ok(())
    }

    async fn abort(&mut self) {
        for (_, (_, file)) in self.open.drain() {
            file.abort().await;
        }
    }
}

/// One writer task.
async fn drive(
    setup: Arc<Setup>,
    writer: usize,
    mut rx: mpsc::Receiver<Piece>,
) -> Result<Vec<DataFile>> {
    let mut parts = Partitions {
        setup,
        writer,
        open: HashMap::new(),
        done: Vec::new(),
        files: 0,
    };
    let result = async {
        while let Some(piece) = rx.recv().await {
            match piece {
                Piece::Rows(batch, _held) => {
                    for (partition, rows) in parts.setup.splitter.split(&batch)? {
                        parts.write(partition, rows).await?;
                    }
                }
                Piece::Cut => parts.finish_all().await?,
            }
        }
        parts.finish_all().await
    }
    .await;
    match result {
        Ok(()) => Ok(parts.done),
        Err(e) => {
            parts.abort().await;
            Err(e)
        }
    }
}
