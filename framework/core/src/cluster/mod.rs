//! Clustered writes: a run's rows sorted by a key before they reach the data file writers, so
//! each file holds one contiguous key range and the ranges of a run's files do not overlap.
//! Min/max statistics then tell a merge which few files can hold its keys; round-robin
//! writers instead make every file span the whole key range, and every merge rewrite every
//! file.
//!
//! - [`SortKey`]: the columns and directions, compared as `arrow-row` rows.
//! - [`ExternalSort`]: sorts any number of rows in bounded memory (sorted runs spilled to
//!   Arrow IPC temp files, then merged).
//! - [`SortedMerge`]: merges sorted batch streams into one sorted stream, copying whole
//!   slices where the inputs do not interleave; an input's batches may carry a mask of the
//!   rows that stay ([`Remains`]: the rows of a file a merge rewrites), copied only once.
//! - [`Extent`] and [`chain`]: which existing files are sorted and disjoint, so a merge can
//!   stream their remaining rows in order instead of sorting them again.
//! - [`resolve`]: the `cluster_by` key table formats share.
//!
//! The writers cut files at key-range boundaries ([`crate::parallel::RoundRobin::clustered`]).

mod ahead;
mod merge;
mod sort;

use std::future::Future;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_buffer::BooleanBuffer;
use arrow_row::{OwnedRow, RowConverter, Rows, SortField};
use arrow_schema::{Schema, SchemaRef, SortOptions};
use arrow_select::filter::filter_record_batch;
use futures::{StreamExt, TryStreamExt};

use crate::destination::WriteMode;
use crate::error::{Error, Result};

pub use ahead::{AHEAD, read_ahead};
pub use merge::SortedMerge;
pub use sort::{ExternalSort, FAN_IN};

/// A stream of record batches (a sorted one, where this module hands it out).
pub type BatchStream<'a> = futures::stream::BoxStream<'a, Result<RecordBatch>>;

/// A stream of [`Remains`]: a data file's rows as read, with those that stay marked.
pub type RemainsStream<'a> = futures::stream::BoxStream<'a, Result<Remains>>;

/// A batch of a data file a merge rewrites, and which of its rows stay (`None`: all). The
/// ordered merge copies only the rows that stay, straight from the batch as read.
#[derive(Debug, Clone)]
pub struct Remains {
    /// The rows as read.
    pub batch: RecordBatch,
    /// Which rows stay (`None`: every row).
    pub keep: Option<BooleanBuffer>,
}

impl Remains {
    /// Every row of `batch` stays.
    pub fn all(batch: RecordBatch) -> Self {
        Self { batch, keep: None }
    }

    /// The rows of `batch` that `keep` marks (of `batch`'s length) stay.
    pub fn kept(batch: RecordBatch, keep: BooleanBuffer) -> Self {
        let keep = (keep.count_set_bits() < keep.len()).then_some(keep);
        Self { batch, keep }
    }

    /// How many rows stay.
    pub fn num_rows(&self) -> usize {
        self.keep
            .as_ref()
            .map_or(self.batch.num_rows(), BooleanBuffer::count_set_bits)
    }

    /// The rows that stay, as a batch of their own.
    pub fn into_batch(self) -> Result<RecordBatch> {
        match self.keep {
            None => Ok(self.batch),
            Some(keep) => filter_record_batch(&self.batch, &BooleanArray::new(keep, None))
                .map_err(|e| Error::external("rewriting a data file").with_source(e)),
        }
    }
}

/// A data file's rows read again after its key scan (`rows`), with the rows the scan's `keep`
/// marks (one bit per row of the file) staying; an error if the file returns other rows than
/// the scan saw (`file` names it).
pub fn kept_rows(
    file: &str,
    rows: BatchStream<'static>,
    keep: BooleanBuffer,
) -> RemainsStream<'static> {
    let file: Arc<str> = file.into();
    futures::stream::try_unfold((rows, 0usize), move |(mut rows, at)| {
        let (keep, file) = (keep.clone(), Arc::clone(&file));
        async move {
            let changed = || {
                Error::internal(format!(
                    "data file {file} returned different rows when read again"
                ))
            };
            let Some(batch) = rows.try_next().await? else {
                return if at == keep.len() {
                    Ok(None)
                } else {
                    Err(changed())
                };
            };
            let n = batch.num_rows();
            if at + n > keep.len() {
                return Err(changed());
            }
            Ok(Some((
                Remains::kept(batch, keep.slice(at, n)),
                (rows, at + n),
            )))
        }
    })
    .boxed()
}

/// Memory an [`ExternalSort`] holds before it spills a sorted run to disk. A merge holds it
/// beside its key index: at 128 MiB a first load of 5M rows by merge peaked above 512 MiB.
pub const SORT_MEMORY: usize = 64 * 1024 * 1024;

/// Rows per batch that sorting and merging hand on.
pub const BATCH_ROWS: usize = 8192;

/// Most Arrow bytes of sorted rows that go to one writer before it closes its files: bounds
/// what the writers buffer (each holds up to this much while it encodes).
pub const MAX_SEGMENT_BYTES: usize = 64 * 1024 * 1024;

/// The columns rows are clustered by, with their directions.
#[derive(Debug)]
pub struct SortKey {
    columns: Vec<usize>,
    converter: RowConverter,
}

impl SortKey {
    /// A key over `schema`'s columns at `columns` (each with its sort options).
    pub fn new(schema: &Schema, columns: &[(usize, SortOptions)]) -> Result<Arc<Self>> {
        let mut fields = Vec::with_capacity(columns.len());
        let mut names = Vec::with_capacity(columns.len());
        for &(i, options) in columns {
            let field = schema.fields().get(i).ok_or_else(|| {
                Error::internal(format!("sort column {i} is not in the write schema"))
            })?;
            fields.push(SortField::new_with_options(
                field.data_type().clone(),
                options,
            ));
            names.push(field.name().clone());
        }
        let converter = RowConverter::new(fields)
            .map_err(|e| Error::user(format!("cannot cluster by {}: {e}", names.join(", "))))?;
        Ok(Arc::new(Self {
            columns: columns.iter().map(|&(i, _)| i).collect(),
            converter,
        }))
    }

    /// The key's columns (indices in the schema it was made for), in order.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// The key of every row of `batch` (of the schema the key was made for).
    pub fn rows(&self, batch: &RecordBatch) -> Result<Rows> {
        let columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        self.rows_of(&columns)
    }

    /// The key of every row of `columns` (the key's columns, in key order).
    pub fn rows_of(&self, columns: &[ArrayRef]) -> Result<Rows> {
        Ok(self.converter.convert_columns(columns)?)
    }
}

/// How an existing data file's rows lie along a [`SortKey`]: whether they are in order, and
/// its first and last key.
#[derive(Debug, Clone, Default)]
pub struct Extent {
    sorted: bool,
    first: Option<OwnedRow>,
    last: Option<OwnedRow>,
}

impl Extent {
    /// An empty extent, extended batch by batch with [`Extent::add`].
    pub fn new() -> Self {
        Self {
            sorted: true,
            first: None,
            last: None,
        }
    }

    /// The next rows of the file, in file order.
    pub fn add(&mut self, rows: &Rows) {
        let n = rows.num_rows();
        if n == 0 {
            return;
        }
        if self.sorted {
            let after_last = self.last.as_ref().is_none_or(|l| l.row() <= rows.row(0));
            self.sorted = after_last && (1..n).all(|i| rows.row(i - 1) <= rows.row(i));
        }
        if self.first.is_none() {
            self.first = Some(rows.row(0).owned());
        }
        self.last = Some(rows.row(n - 1).owned());
    }

    /// Whether every row came in key order.
    pub fn is_sorted(&self) -> bool {
        self.sorted
    }
}

/// Split files into a chain of sorted files whose key ranges follow each other (the order to
/// stream them in) and the rest (unsorted, overlapping, empty), which must be sorted again.
pub fn chain<T>(files: Vec<(T, Extent)>) -> (Vec<T>, Vec<T>) {
    let (mut ordered, mut rest) = (Vec::new(), Vec::new());
    let mut sorted: Vec<(T, OwnedRow, OwnedRow)> = Vec::new();
    for (file, extent) in files {
        match (extent.sorted, extent.first, extent.last) {
            (true, Some(first), Some(last)) => sorted.push((file, first, last)),
            _ => rest.push(file),
        }
    }
    sorted.sort_by(|a, b| a.1.cmp(&b.1));
    let mut end: Option<OwnedRow> = None;
    for (file, first, last) in sorted {
        if end.as_ref().is_none_or(|e| e.row() <= first.row()) {
            end = Some(last);
            ordered.push(file);
        } else {
            rest.push(file);
        }
    }
    (ordered, rest)
}

/// What a copy-on-write merge writes: the remains of the files it rewrites (`touched`, each
/// read by `remainder`) and its `incoming` rows. Clustered (`key`), in key order: the remains
/// of files that overlap others go through an external sort (with the incoming rows too,
/// unless they come sorted by `key` already), merged with the remains of sorted files with
/// disjoint ranges (see [`chain`]), which are streamed in key order, not sorted again, and
/// copied once (from the batches as read, passing over the rows that go). Not clustered:
/// everything as it comes. The remains are decoded on tasks of their own, [`AHEAD`] batches
/// ahead of the merge.
pub async fn merge_output<T, F, Fut, E>(
    key: Option<&Arc<SortKey>>,
    schema: &SchemaRef,
    touched: Vec<(T, Extent)>,
    remainder: F,
    incoming: Incoming,
) -> Result<BatchStream<'static>>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<RemainsStream<'static>, E>> + Send + 'static,
    E: 'static,
    Error: From<E>,
{
    let (ordered, unordered) = match key {
        Some(_) => chain(touched),
        None => (Vec::new(), touched.into_iter().map(|(t, _)| t).collect()),
    };
    let files = |files: Vec<T>| {
        let remainder = remainder.clone();
        futures::stream::iter(files)
            .then(remainder)
            .map_err(Error::from)
            .try_flatten()
    };
    // Files streamed as they are (in no order, or through the sort) are filtered on the
    // read-ahead task; the chain's rows are filtered by the ordered merge as it copies them.
    let mut unordered = read_ahead(
        files(unordered)
            .and_then(|remains| futures::future::ready(remains.into_batch()))
            .boxed(),
        AHEAD,
    );
    let ordered = read_ahead(files(ordered).boxed(), AHEAD);
    let Some(key) = key else {
        return Ok(unordered.chain(incoming.rows).boxed());
    };
    let presorted = incoming
        .sorted_by
        .as_ref()
        .is_some_and(|k| Arc::ptr_eq(k, key));
    let mut sorter = ExternalSort::new(Arc::clone(schema), Arc::clone(key), SORT_MEMORY);
    while let Some(batch) = unordered.try_next().await? {
        sorter.push(batch)?;
    }
    let mut inputs: Vec<RemainsStream<'static>> = Vec::with_capacity(3);
    if presorted {
        inputs.push(incoming.rows.map_ok(Remains::all).boxed());
    } else {
        let mut rows = incoming.rows;
        while let Some(batch) = rows.try_next().await? {
            sorter.push(batch)?;
        }
    }
    if sorter.rows() > 0 {
        let spilled = sorter.spilled_runs();
        inputs.push(sorter.finish().await?.map_ok(Remains::all).boxed());
        tracing::debug!(spilled, presorted, "merge output sorted");
    }
    inputs.push(ordered);
    Ok(SortedMerge::of_remains(Arc::clone(key), inputs)
        .await?
        .into_stream())
}

/// A merge's incoming rows, deduplicated, as a stream.
pub struct Incoming {
    /// The rows.
    pub rows: BatchStream<'static>,
    /// The key they come sorted by, if they do.
    pub sorted_by: Option<Arc<SortKey>>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("sorted", &self.sorted_by.is_some())
            .finish_non_exhaustive()
    }
}

/// The columns a run's rows are clustered by: `cluster_by` as configured (`Some(empty)`:
/// not clustered), else the merge keys of a merge, else `sort_order` (the format's own
/// declared order, if it has one).
pub fn resolve(
    cluster_by: Option<&[String]>,
    mode: WriteMode,
    merge_keys: &[String],
    sort_order: &[String],
) -> Vec<String> {
    match cluster_by {
        Some(columns) => columns.to_vec(),
        None if mode == WriteMode::Merge && !merge_keys.is_empty() => merge_keys.to_vec(),
        None => sort_order.to_vec(),
    }
}

/// The bytes `batch`'s rows take: for a slice of a larger batch, its share, not the whole
/// buffers it points into (what `get_array_memory_size` reports).
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// The Arrow bytes of sorted rows one writer takes before it closes its files, for files of
/// `target_file_size` bytes: Parquet compresses, so a segment of that many Arrow bytes
/// makes files below the target; at most [`MAX_SEGMENT_BYTES`].
pub fn segment_bytes(target_file_size: u64) -> usize {
    usize::try_from(target_file_size)
        .unwrap_or(usize::MAX)
        .clamp(1024 * 1024, MAX_SEGMENT_BYTES)
}

#[cfg(test)]
mod tests;
