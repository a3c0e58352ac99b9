//! Merging sorted batch streams into one sorted stream. Each input is at one batch (with its
//! keys as rows); the input whose next row is smallest hands on every row up to the next
//! smallest input's next row at once — a whole slice where inputs do not interleave (a
//! merge's sorted new rows against a long run of untouched old rows), a few rows where they
//! do. Rows of equal keys come out in the order of their inputs (stable: an external sort's
//! runs are given oldest first, so equal keys keep their arrival order). Memory: one batch per
//! input and one output batch.

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
    /// Inputs with rows left, smallest next row first (of equal next rows, the earlier input).
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
    /// Merge `streams`, each sorted by `key`; of equal keys, those of earlier streams first.
    pub async fn new(key: Arc<SortKey>, streams: Vec<BatchStream<'a>>) -> Result<Self> {
        let mut inputs = Vec::with_capacity(streams.len());
        for stream in streams {
            if let Some(input) = Input::start(stream, &key).await? {
                inputs.push(input);
            }
        }
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        // stable: equal heads keep the inputs' order
        order.sort_by(|&a, &b| inputs[a].head().cmp(&inputs[b].head()));
        Ok(Self { key, inputs, order })
    }

    /// The next up to [`BATCH_ROWS`] rows in key order, or `None` when every input is done.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        // The batches the output's rows come from, each once; `held[i]`: input i's current
        // batch among them, if it gave rows yet.
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut held: Vec<Option<usize>> = vec![None; self.inputs.len()];
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        let mut taken = 0;
        while taken < BATCH_ROWS {
            let Some(&i) = self.order.first() else {
                break;
            };
            let input = &self.inputs[i];
            let end = match self.order.get(1) {
                // rows equal to the next input's head go first only from an earlier input
                Some(&j) => upto(input, &self.inputs[j], i < j),
                None => input.batch.num_rows(),
            };
            let n = (end - input.at).clamp(1, BATCH_ROWS - taken);
            let b = *held[i].get_or_insert_with(|| {
                batches.push(input.batch.clone());
                batches.len() - 1
            });
            pieces.push((b, input.at, n));
            taken += n;
            let input = &mut self.inputs[i];
            input.at += n;
            self.order.remove(0);
            if input.at == input.batch.num_rows() {
                held[i] = None;
                if !input.advance(&self.key).await? {
                    continue;
                }
            }
            let head = self.inputs[i].head();
            let at = self
                .order
                .partition_point(|&k| match self.inputs[k].head().cmp(&head) {
                    Ordering::Less => true,
                    Ordering::Equal => k < i,
                    Ordering::Greater => false,
                });
            self.order.insert(at, i);
        }
        gather(&batches, &pieces)
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

/// The end (exclusive) of `input`'s rows that sort before `next`'s next row, or at it too
/// when `ties` (`input` is the earlier of the two). The rows are sorted: gallop from the
/// current row (runs are often short where inputs interleave), then search the last step in
/// halves.
fn upto(input: &Input<'_>, next: &Input<'_>, ties: bool) -> usize {
    let bound = next.head();
    let before = |row: arrow_row::Row<'_>| if ties { row <= bound } else { row < bound };
    let rows = input.batch.num_rows();
    let (mut lo, mut step) = (input.at, 1);
    // rows before `lo` go before `bound`; find `hi` with a row that does not
    let mut hi = loop {
        let probe = lo + step;
        if probe >= rows {
            break rows;
        }
        if !before(input.rows.row(probe)) {
            break probe;
        }
        lo = probe;
        step *= 2;
    };
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(input.rows.row(mid)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// One batch of `pieces` (batch index in `batches`, first row, rows), in order: a slice if
/// there is one piece.
fn gather(
    batches: &[RecordBatch],
    pieces: &[(usize, usize, usize)],
) -> Result<Option<RecordBatch>> {
    match pieces {
        [] => Ok(None),
        [(b, at, n)] => Ok(batches.get(*b).map(|batch| batch.slice(*at, *n))),
        _ => {
            let mut indices = Vec::with_capacity(pieces.iter().map(|p| p.2).sum());
            for &(b, at, n) in pieces {
                indices.extend((at..at + n).map(|r| (b, r)));
            }
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            Ok(Some(interleave_record_batch(&refs, &indices)?))
        }
    }
}
