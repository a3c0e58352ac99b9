//! Merging sorted batch streams into one sorted stream. Each input is at one batch (with its
//! keys as rows); the input whose next row is smallest hands on every row up to the next
//! smallest input's next row at once — a whole slice where inputs do not interleave (a
//! merge's sorted new rows against a long run of untouched old rows), a few rows where they
//! do. Memory: one batch per input and one output batch.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_row::Rows;
use arrow_select::interleave::interleave_record_batch;
use futures::{FutureExt, StreamExt};

use super::{BATCH_ROWS, BatchStream, SortKey};
use crate::error::Result;

struct Input<'a> {
    stream: BatchStream<'a>,
    batch: RecordBatch,
    rows: Rows,
    at: usize,
}

impl<'a> Input<'a> {
    /// An input at `stream`'s first non-empty batch (`None`: the stream has no rows).
    async fn start(mut stream: BatchStream<'a>, key: &SortKey) -> Result<Option<Self>> {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_rows() > 0 {
                let rows = key.rows(&batch)?;
                return Ok(Some(Self {
                    stream,
                    batch,
                    rows,
                    at: 0,
                }));
            }
        }
        Ok(None)
    }

    /// Move to the next non-empty batch, or return `false` at the end of the stream.
    async fn advance(&mut self, key: &SortKey) -> Result<bool> {
        while let Some(batch) = self.stream.next().await {
            let batch = batch?;
            if batch.num_rows() > 0 {
                self.rows = key.rows(&batch)?;
                self.batch = batch;
                self.at = 0;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn head(&self) -> arrow_row::Row<'_> {
        self.rows.row(self.at)
    }
}

/// One sorted stream from several.
pub struct SortedMerge<'a> {
    key: Arc<SortKey>,
    inputs: Vec<Input<'a>>,
    /// Inputs with rows left, smallest next row first.
    order: Vec<usize>,
}

impl std::fmt::Debug for SortedMerge<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SortedMerge")
            .field("inputs", &self.inputs.len())
            .field("live", &self.order.len())
            .finish()
    }
}

impl<'a> SortedMerge<'a> {
    /// Merge `streams`, each sorted by `key`.
    pub async fn new(key: Arc<SortKey>, streams: Vec<BatchStream<'a>>) -> Result<Self> {
        let mut inputs = Vec::with_capacity(streams.len());
        for stream in streams {
            if let Some(input) = Input::start(stream, &key).await? {
                inputs.push(input);
            }
        }
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by(|&a, &b| inputs[a].head().cmp(&inputs[b].head()));
        Ok(Self { key, inputs, order })
    }

    /// The next up to [`BATCH_ROWS`] rows in key order, or `None` when every input is done.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        let mut pieces: Vec<(RecordBatch, usize, usize)> = Vec::new();
        let mut taken = 0;
        while taken < BATCH_ROWS {
            let Some(&i) = self.order.first() else {
                break;
            };
            let input = &self.inputs[i];
            let end = match self.order.get(1) {
                Some(&j) => upto(input, &self.inputs[j]),
                None => input.batch.num_rows(),
            };
            let n = (end - input.at).clamp(1, BATCH_ROWS - taken);
            pieces.push((input.batch.clone(), input.at, n));
            taken += n;
            let input = &mut self.inputs[i];
            input.at += n;
            self.order.remove(0);
            if input.at == input.batch.num_rows() && !input.advance(&self.key).await? {
                continue;
            }
            let head = self.inputs[i].head();
            let at = self
                .order
                .partition_point(|&k| self.inputs[k].head().cmp(&head) != Ordering::Greater);
            self.order.insert(at, i);
        }
        gather(&pieces)
    }

    /// The merged rows as a stream.
    pub fn into_stream(self) -> BatchStream<'a>
    where
        Self: Send + 'a,
    {
        futures::stream::try_unfold(self, step).boxed()
    }
}

/// One batch of the merged stream, and the merge to go on with.
type Step<'a> = Result<Option<(RecordBatch, SortedMerge<'a>)>>;

fn step<'a>(mut merge: SortedMerge<'a>) -> futures::future::BoxFuture<'a, Step<'a>> {
    async move { Ok(merge.next().await?.map(|batch| (batch, merge))) }.boxed()
}

/// The end (exclusive) of `input`'s rows that sort at or before `next`'s next row: binary
/// search, as an input's rows are sorted.
fn upto(input: &Input<'_>, next: &Input<'_>) -> usize {
    let bound = next.head();
    let (mut lo, mut hi) = (input.at, input.batch.num_rows());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if input.rows.row(mid) <= bound {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// One batch of `pieces` (batch, first row, rows), in order: a slice if there is one piece.
fn gather(pieces: &[(RecordBatch, usize, usize)]) -> Result<Option<RecordBatch>> {
    match pieces {
        [] => Ok(None),
        [(batch, at, n)] => Ok(Some(batch.slice(*at, *n))),
        _ => {
            let mut batches: Vec<&RecordBatch> = Vec::new();
            let mut indices = Vec::with_capacity(pieces.iter().map(|p| p.2).sum());
            for (batch, at, n) in pieces {
                // consecutive pieces of one batch share its index
                let same = batches
                    .last()
                    .is_some_and(|last: &&RecordBatch| same_batch(last, batch));
                if !same {
                    batches.push(batch);
                }
                let b = batches.len() - 1;
                indices.extend((*at..at + n).map(|r| (b, r)));
            }
            Ok(Some(interleave_record_batch(&batches, &indices)?))
        }
    }
}

/// Whether two batches share their columns (clones of one batch).
fn same_batch(a: &RecordBatch, b: &RecordBatch) -> bool {
    a.num_rows() == b.num_rows()
        && a.columns().len() == b.columns().len()
        && a.columns()
            .iter()
            .zip(b.columns())
            .all(|(x, y)| Arc::ptr_eq(x, y))
}
