//! Data files: Parquet written by delta-rs' [`DeltaWriter`] (split by partition values,
//! rolled at the target size), several writers each on its own task — fed round-robin, or,
//! for clustered rows, a key-range segment at a time with new files per segment: Parquet
//! encoding and compression are the expensive part of a load, and one writer keeps one core
//! busy. Column statistics are ours, written from each file's footer when the writers close
//! (see `stats.rs`).

use std::collections::HashSet;
use std::num::NonZeroU64;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::kernel::Add;
use deltalake::logstore::ObjectStoreRef;
use deltalake::operations::write::writer::{DeltaWriter, WriterConfig};
use pipe_framework::parallel::{Piece, RoundRobin};
use pipe_framework::parquet_options::{SampledWriters, WriterSettings};
use tokio::sync::mpsc;

use crate::error::{Result, delta};
use crate::stats::{self, StatsSpec};

/// Rows handed to the Parquet writer at a time (the granularity of the file size check).
const WRITE_BATCH_ROWS: usize = 64 * 1024;

/// The run's data file writers: [`DeltaWriter`]s fed round-robin, each on its own task,
/// started once the run's first rows came (a sample of them picks the columns written
/// without a dictionary).
#[derive(Debug)]
pub(crate) struct ParallelWriter {
    /// What the writers need to start.
    setup: Setup,
    /// The writers, started once the first rows came.
    writers: SampledWriters<Vec<Add>>,
    /// Top-level float columns a NaN was written into (no bounds for them).
    nan_columns: HashSet<String>,
}

#[derive(Debug)]
struct Setup {
    store: ObjectStoreRef,
    schema: SchemaRef,
    stats: StatsSpec,
    options: WriterSettings,
    /// Clustered: the writers take sorted rows a key-range segment at a time.
    segment_bytes: Option<usize>,
}

impl Setup {
    fn start(&self, plain: &[String]) -> RoundRobin<Vec<Add>> {
        let properties = self.options.properties(plain);
        let start = |_, rx| {
            let (store, schema) = (Arc::clone(&self.store), self.schema.clone());
            let partitions = self.stats.partition_columns.clone();
            let (properties, target) = (properties.clone(), self.options.target_file_size);
            // No statistics from delta-rs (an empty column list): ours replace them.
            let open = move || {
                let config = WriterConfig::new(
                    schema.clone(),
                    partitions.clone(),
                    Some(properties.clone()),
                    NonZeroU64::new(target),
                    Some(WRITE_BATCH_ROWS),
                    DataSkippingNumIndexedCols::NumColumns(0),
                    Some(Vec::new()),
                );
                DeltaWriter::new(Arc::clone(&store), config)
            };
            drive(open, rx)
        };
        RoundRobin::new(self.options.writers, self.segment_bytes, start)
    }
}

/// One writer task: a new [`DeltaWriter`] (new files) after every cut.
async fn drive(
    open: impl Fn() -> DeltaWriter,
    mut rx: mpsc::Receiver<Piece>,
) -> pipe_framework::Result<Vec<Add>> {
    let mut adds = Vec::new();
    let mut writer = open();
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Rows(batch, _held) => writer
                .write(&batch)
                .await
                .map_err(delta("writing a data file"))?,
            Piece::Cut => {
                let done = std::mem::replace(&mut writer, open());
                adds.extend(done.close().await.map_err(delta("finishing data files"))?);
            }
        }
    }
    adds.extend(
        writer
            .close()
            .await
            .map_err(delta("finishing data files"))?,
    );
    Ok(adds)
}

impl ParallelWriter {
    /// Start `options.writers` writers of batches of `schema` (the table's Arrow schema,
    /// partition columns included) into `store` (the table root), fed in turn, or by
    /// key-range segments of `segment_bytes` when the rows come sorted (`Some`).
    pub(crate) fn new(
        store: ObjectStoreRef,
        schema: SchemaRef,
        stats: StatsSpec,
        options: &WriterSettings,
        segment_bytes: Option<usize>,
    ) -> Self {
        Self {
            setup: Setup {
                store,
                schema,
                stats,
                options: options.clone(),
                segment_bytes,
            },
            writers: SampledWriters::new(options.row_group_rows),
            nan_columns: HashSet::new(),
        }
    }

    /// Hand one batch (of the table's schema) to the next writer.
    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        stats::nan_columns(&batch, &mut self.nan_columns);
        let setup = &self.setup;
        Ok(self
            .writers
            .write(batch, |plain| setup.start(&plain))
            .await?)
    }

    /// Finish every writer: all their files with exact statistics, or the first error (none
    /// if no row came).
    pub(crate) async fn close(self) -> Result<Vec<Add>> {
        let setup = &self.setup;
        let files = self.writers.close(|plain| setup.start(&plain)).await?;
        let mut adds: Vec<Add> = files.into_iter().flatten().collect();
        stats::restate(
            &self.setup.store,
            &mut adds,
            &self.setup.stats,
            &self.nan_columns,
        )
        .await?;
        Ok(adds)
    }
}
