//! Data files: Parquet written by delta-rs' [`DeltaWriter`] (split by partition values,
//! rolled at the target size), several writers each on its own task — fed round-robin, or,
//! for clustered rows, a key-range segment at a time with new files per segment: Parquet
//! encoding and compression are the expensive part of a load, and one writer keeps one core
//! busy. Column statistics are ours, written from each file's footer when the writers close
//! (see `stats.rs`).

use std::num::NonZeroU64;
use std::sync::Arc;

use std::collections::HashSet;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, SchemaRef};
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::kernel::Add;
use deltalake::logstore::ObjectStoreRef;
use deltalake::operations::write::writer::{DeltaWriter, WriterConfig};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use pipe_framework::parallel::{Piece, RoundRobin};
use tokio::sync::mpsc;

use crate::error::{Result, delta};
use crate::stats::{self, StatsSpec};

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
    /// Parquet properties; the columns in `plain` are written without dictionary encoding.
    fn properties(&self, plain: &[String]) -> WriterProperties {
        let mut builder = WriterProperties::builder()
            .set_compression(self.compression)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_created_by(format!("pipe {}", env!("CARGO_PKG_VERSION")));
        for column in plain {
            builder =
                builder.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false);
        }
        builder.build()
    }
}

/// Rows of the first batch looked at to pick the columns written without a dictionary.
const SAMPLE_ROWS: usize = 64 * 1024;
/// Below this many rows the first batch says too little; every column keeps its dictionary.
const MIN_SAMPLE_ROWS: usize = 4096;
/// Share of distinct values above which a column is written without a dictionary.
const PLAIN_ABOVE: f64 = 0.9;

/// The top-level columns of `sample` (the run's first batch) whose values are nearly all
/// distinct. A Parquet writer hashes every value into the column's dictionary until the
/// dictionary page is full (1 MiB), then falls back to plain encoding for the rest of the
/// row group: for keys, timestamps, amounts and free text that hashing is wasted work (a
/// fifth of a merge's CPU on the benchmark's orders). Nested, boolean and dictionary
/// columns keep the default.
fn high_cardinality_columns(sample: &RecordBatch) -> Vec<String> {
    let rows = sample.num_rows().min(SAMPLE_ROWS);
    if rows < MIN_SAMPLE_ROWS {
        return Vec::new();
    }
    let schema = sample.schema();
    schema
        .fields()
        .iter()
        .zip(sample.columns())
        .filter(|(field, _)| {
            let t = field.data_type();
            !t.is_nested() && !matches!(t, DataType::Boolean | DataType::Dictionary(_, _))
        })
        .filter(|(_, column)| {
            distinct(&column.slice(0, rows)).is_some_and(|d| d as f64 > PLAIN_ABOVE * rows as f64)
        })
        .map(|(field, _)| field.name().clone())
        .collect()
}

/// Distinct values of `column` (NULL counting as one).
fn distinct(column: &ArrayRef) -> Option<usize> {
    let converter = RowConverter::new(vec![SortField::new(column.data_type().clone())]).ok()?;
    let rows = converter
        .convert_columns(std::slice::from_ref(column))
        .ok()?;
    let values: HashSet<&[u8]> = rows.iter().map(|r| r.data()).collect();
    Some(values.len())
}

/// The run's data file writers: [`DeltaWriter`]s fed round-robin, each on its own task,
/// started by the first batch (which picks the columns written without a dictionary).
#[derive(Debug)]
pub(crate) struct ParallelWriter {
    /// What the writers need to start.
    setup: Setup,
    /// The writers, once the first batch came.
    running: Option<RoundRobin<Vec<Add>>>,
    /// Top-level float columns a NaN was written into (no bounds for them).
    nan_columns: HashSet<String>,
}

#[derive(Debug)]
struct Setup {
    store: ObjectStoreRef,
    schema: SchemaRef,
    stats: StatsSpec,
    options: WriteOptions,
    /// Clustered: the writers take sorted rows a key-range segment at a time.
    segment_bytes: Option<usize>,
}

impl Setup {
    fn start(&self, first: &RecordBatch) -> RoundRobin<Vec<Add>> {
        let plain = high_cardinality_columns(first);
        if !plain.is_empty() {
            tracing::debug!(columns = ?plain, "writing without dictionary encoding");
        }
        let properties = self.options.properties(&plain);
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
        match self.segment_bytes {
            Some(bytes) => RoundRobin::clustered(self.options.writers, bytes, start),
            None => RoundRobin::spawn(self.options.writers, start),
        }
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
        options: &WriteOptions,
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
            running: None,
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
        let writers = self.running.get_or_insert_with(|| setup.start(&batch));
        Ok(writers.write(batch).await?)
    }

    /// Finish every writer: all their files with exact statistics, or the first error (none
    /// if no row came).
    pub(crate) async fn close(self) -> Result<Vec<Add>> {
        let Some(writers) = self.running else {
            return Ok(Vec::new());
        };
        let mut adds: Vec<Add> = writers.close().await?.into_iter().flatten().collect();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{BooleanArray, Int64Array, StringArray};

    use super::*;

    #[test]
    fn nearly_distinct_columns_are_written_without_a_dictionary() {
        let n = 10_000_i64;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("c{}", i % 7)),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("free text {i}")),
            )),
            Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 2 == 0)))),
        ];
        let names = ["id", "status", "comment", "flag"];
        let batch = RecordBatch::try_from_iter(names.into_iter().zip(columns)).unwrap();
        assert_eq!(high_cardinality_columns(&batch), ["id", "comment"]);
        // too few rows to judge: every column keeps its dictionary
        assert!(high_cardinality_columns(&batch.slice(0, 100)).is_empty());
    }
}
