//! Sorting any number of rows in bounded memory: batches (with their keys in the row format)
//! are held until they take the budget, then sorted and spilled to an Arrow IPC temp file as
//! one sorted run; the runs are merged at the end, at most [`FAN_IN`] at a time (more runs
//! are merged into longer runs first), with the rows still held as the last run (they are
//! not written out only to be read back). Rows that fit are never spilled. The sort is
//! stable: rows of equal keys come out in the order they were pushed.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_row::Rows;
use arrow_schema::SchemaRef;
use arrow_select::interleave::interleave_record_batch;
use futures::StreamExt;

use super::{BATCH_ROWS, BatchStream, SortKey, SortedMerge, batch_bytes};
use crate::error::Result;
use crate::spool::{BatchSpool, Spooled};

/// Most sorted runs merged at once (each holds a batch and two file handles while merged).
pub const FAN_IN: usize = 64;

/// Bytes per held row besides the row itself: its place in the sort order, and its key while
/// it is sorted.
const ORDER_BYTES: usize =
    std::mem::size_of::<(usize, usize)>() + std::mem::size_of::<(u128, u32, u32)>();

/// Sorts the rows pushed into it by a [`SortKey`].
#[derive(Debug)]
pub struct ExternalSort {
    schema: SchemaRef,
    key: Arc<SortKey>,
    budget: usize,
    held: Vec<RecordBatch>,
    held_rows: Vec<Rows>,
    held_bytes: usize,
    runs: Vec<Spooled>,
    rows: u64,
}

impl ExternalSort {
    /// A sorter of batches of `schema` holding at most about `budget` bytes in memory.
    pub fn new(schema: SchemaRef, key: Arc<SortKey>, budget: usize) -> Self {
        Self {
            schema,
            key,
            budget,
            held: Vec::new(),
            held_rows: Vec::new(),
            held_bytes: 0,
            runs: Vec::new(),
            rows: 0,
        }
    }

    /// The key the rows are sorted by.
    pub fn key(&self) -> &Arc<SortKey> {
        &self.key
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Sorted runs spilled to disk so far.
    pub fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    /// Take one batch (of the sorter's schema); spills a sorted run when memory is full.
    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        let rows = self.key.rows(&batch)?;
        self.held_bytes += batch_bytes(&batch) + rows.size() + ORDER_BYTES * batch.num_rows();
        self.held.push(batch);
        self.held_rows.push(rows);
        if self.held_bytes >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn take_held(&mut self) -> Sorted {
        self.held_bytes = 0;
        Sorted::new(
            std::mem::take(&mut self.held),
            &std::mem::take(&mut self.held_rows),
        )
    }

    fn spill(&mut self) -> Result<()> {
        let held = self.take_held();
        let mut spool = BatchSpool::new(Arc::clone(&self.schema), "sort")?;
        for batch in held {
            spool.write(&batch?)?;
        }
        self.runs.push(spool.finish()?);
        tracing::debug!(runs = self.runs.len(), "spilled a sorted run");
        Ok(())
    }

    /// Every row pushed, in key order (of equal keys, in the order they were pushed).
    pub async fn finish(mut self) -> Result<BatchStream<'static>> {
        let holds = usize::from(!self.held.is_empty());
        let held = self.take_held();
        if self.runs.is_empty() {
            return Ok(futures::stream::iter(held).boxed());
        }
        // Too many runs to merge at once (the held rows, if any, are one more): merge the
        // oldest into a longer run first, which stays the oldest.
        while self.runs.len() + holds > FAN_IN {
            let batch: Vec<Spooled> = self.runs.drain(..FAN_IN).collect();
            let mut inputs = Vec::with_capacity(batch.len());
            for run in &batch {
                inputs.push(futures::stream::iter(run.batches()?).boxed());
            }
            let mut merged = SortedMerge::new(Arc::clone(&self.key), inputs).await?;
            let mut spool = BatchSpool::new(Arc::clone(&self.schema), "sort")?;
            while let Some(b) = merged.next().await? {
                spool.write(&b)?;
            }
            drop(merged);
            self.runs.insert(0, spool.finish()?);
        }
        let mut inputs = Vec::with_capacity(self.runs.len() + 1);
        for run in &self.runs {
            inputs.push(futures::stream::iter(run.batches()?).boxed());
        }
        inputs.push(futures::stream::iter(held).boxed());
        // The spooled runs are deleted once the merge (which holds their readers) and this
        // list are dropped; the readers keep their files open until then.
        let runs = std::mem::take(&mut self.runs);
        let merged = SortedMerge::new(Arc::clone(&self.key), inputs).await?;
        Ok(merged
            .into_stream()
            .map(move |b| {
                let _keep = &runs;
                b
            })
            .boxed())
    }
}

/// Held batches in key order, handed out [`BATCH_ROWS`] rows at a time (each one gathered
/// from the held batches when it is asked for, so memory stays about what was held).
struct Sorted {
    batches: Vec<RecordBatch>,
    order: Vec<(usize, usize)>,
    at: usize,
}

impl Sorted {
    /// `batches` ordered by their keys `rows` (one [`Rows`] per batch); equal keys keep their
    /// order.
    fn new(batches: Vec<RecordBatch>, rows: &[Rows]) -> Self {
        let order = fixed_width_order(rows).unwrap_or_else(|| {
            let mut order: Vec<(usize, usize)> = rows
                .iter()
                .enumerate()
                .flat_map(|(b, rows)| (0..rows.num_rows()).map(move |r| (b, r)))
                .collect();
            order.sort_by(|x, y| rows[x.0].row(x.1).cmp(&rows[y.0].row(y.1)));
            order
        });
        Self {
            batches,
            order,
            at: 0,
        }
    }
}

/// The order of `rows` when every key encodes to the same number of bytes, at most 16 (an
/// integer, a date, a timestamp, two 32-bit integers, ...): each key as a big-endian `u128`,
/// compared as one integer instead of byte by byte. Equal-length byte strings compare like
/// the integers they spell, so the order is the row format's; the position breaks ties, so it
/// is stable. `None` for keys of other widths (strings, wide composites).
pub(super) fn fixed_width_order(rows: &[Rows]) -> Option<Vec<(usize, usize)>> {
    let width = rows
        .iter()
        .find(|r| r.num_rows() > 0)?
        .row(0)
        .as_ref()
        .len();
    if width > 16 {
        return None;
    }
    let total = rows.iter().map(Rows::num_rows).sum();
    let mut keyed: Vec<(u128, u32, u32)> = Vec::with_capacity(total);
    for (b, rows) in rows.iter().enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let bytes = row.as_ref();
            if bytes.len() != width {
                return None;
            }
            let mut key = [0u8; 16];
            key[..width].copy_from_slice(bytes);
            keyed.push((
                u128::from_be_bytes(key),
                u32::try_from(b).ok()?,
                u32::try_from(r).ok()?,
            ));
        }
    }
    keyed.sort_unstable();
    Some(
        keyed
            .into_iter()
            .map(|(_, b, r)| (b as usize, r as usize))
            .collect(),
    )
}

impl Iterator for Sorted {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.order.len() {
            return None;
        }
        let end = (self.at + BATCH_ROWS).min(self.order.len());
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let out = interleave_record_batch(&refs, &self.order[self.at..end]);
        self.at = end;
        Some(out.map_err(Into::into))
    }
}
