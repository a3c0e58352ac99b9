//! Data files: Parquet written by delta-rs' [`DeltaWriter`] (split by partition values,
//! rolled at the target size, column stats collected into the `add` actions), several writers
//! fed round-robin, each on its own task: Parquet encoding and compression are the expensive
//! part of a load, and one writer keeps one core busy.

use std::num::NonZeroU64;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::kernel::Add;
use deltalake::logstore::ObjectStoreRef;
use deltalake::operations::write::writer::{DeltaWriter, WriterConfig};
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use pipe_framework::parallel::RoundRobin;
use tokio::sync::mpsc;

use crate::error::{DeltaError, Result, delta};

/// Rows handed to the Parquet writer at a time (the granularity of the file size check).
const WRITE_BATCH_ROWS: usize = 64 * 1024;

/// How data files are written.
#[derive(Debug, Clone)]
pub(crate) struct WriteOptions {
    /// Roll to a new file past this many bytes.
    pub target_file_size: u64,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Parquet compression.
    pub compression: Compression,
    /// Parallel writer tasks.
    pub writers: usize,
}

impl WriteOptions {
    fn properties(&self) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(self.compression)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_created_by(format!("pipe {}", env!("CARGO_PKG_VERSION")))
            .build()
    }
}

/// Parse `compression`: `zstd`, `zstd(N)`, `snappy`, `lz4`, `gzip`, `none`.
pub(crate) fn parse_compression(text: &str) -> Result<Compression> {
    let t = text.trim().to_ascii_lowercase();
    let bad = || {
        DeltaError::Config(format!(
            "compression = \"{text}\": expected zstd, zstd(N) with N in 1..=22, snappy, lz4, \
             gzip or none"
        ))
    };
    Ok(match t.as_str() {
        "zstd" => Compression::ZSTD(ZstdLevel::try_new(3).map_err(|_| bad())?),
        "snappy" => Compression::SNAPPY,
        "lz4" => Compression::LZ4_RAW,
        "gzip" => Compression::GZIP(GzipLevel::default()),
        "none" | "uncompressed" => Compression::UNCOMPRESSED,
        _ => {
            let level = t
                .strip_prefix("zstd(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|n| n.trim().parse::<i32>().ok())
                .ok_or_else(bad)?;
            Compression::ZSTD(ZstdLevel::try_new(level).map_err(|_| bad())?)
        }
    })
}

/// The run's data file writers: [`DeltaWriter`]s fed round-robin, each on its own task.
#[derive(Debug)]
pub(crate) struct ParallelWriter(RoundRobin<Vec<Add>>);

async fn drive(
    mut writer: DeltaWriter,
    mut rx: mpsc::Receiver<RecordBatch>,
) -> pipe_framework::Result<Vec<Add>> {
    while let Some(batch) = rx.recv().await {
        writer
            .write(&batch)
            .await
            .map_err(delta("writing a data file"))?;
    }
    Ok(writer
        .close()
        .await
        .map_err(delta("finishing data files"))?)
}

impl ParallelWriter {
    /// Start `options.writers` writers of batches of `schema` (the table's Arrow schema,
    /// partition columns included) into `store` (the table root).
    pub(crate) fn new(
        store: ObjectStoreRef,
        schema: SchemaRef,
        partition_columns: Vec<String>,
        indexed_columns: DataSkippingNumIndexedCols,
        options: &WriteOptions,
    ) -> Self {
        Self(RoundRobin::spawn(options.writers, |_, rx| {
            let config = WriterConfig::new(
                schema.clone(),
                partition_columns.clone(),
                Some(options.properties()),
                NonZeroU64::new(options.target_file_size),
                Some(WRITE_BATCH_ROWS),
                indexed_columns,
                None,
            );
            drive(DeltaWriter::new(Arc::clone(&store), config), rx)
        }))
    }

    /// Hand one batch (of the table's schema) to the next writer.
    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        Ok(self.0.write(batch).await?)
    }

    /// Finish every writer: all their files, or the first error.
    pub(crate) async fn close(self) -> Result<Vec<Add>> {
        Ok(self.0.close().await?.into_iter().flatten().collect())
    }
}
