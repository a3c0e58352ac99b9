//! Merging sorted batch streams into one sorted stream. Each input is at one batch (with its
//! keys as rows); the input whose next row is smallest hands on every row up to the next
//! smallest input's next row at once — a whole slice where inputs do not interleave (a
//! merge's sorted new rows against a long run of untouched old rows), a few rows where they
//! do. Rows of equal keys come out in the order of their inputs (stable: an external sort's
//! runs are given oldest first, so equal keys keep their arrival order). An input's batch may
//! come with a mask of the rows that stay ([`Remains`]): the rows it drops are passed over,
//! so a rewritten file's kept rows are copied once, into the output, not filtered first.
//! Memory: one batch per input and one output batch.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::BooleanBuffer;
use arrow_row::Rows;
use arrow_select::interleave::interleave_record_batch;
use futures::{FutureExt, StreamExt, TryStreamExt};

use super::{BATCH_ROWS, BatchStream, Remains, RemainsStream, SortKey};
use crate::error::Result;

/// An input's current batch: its rows, which of them stay, their keys, and the next row to
/// hand on (always one that stays).
struct Current {
    batch: RecordBatch,
    keep: Option<BooleanBuffer>,
    rows: Rows,
    at: usize,
}

impl Current {
    /// `stream`'s next batch with a row that stays, at that row (`None`: no such batch left).
    async fn next(stream: &mut RemainsStream<'_>, key: &SortKey) -> Result<Option<Self>> {
        while let Some(remains) = stream.next().await {
            let Remains { batch, keep } = remains?;
            let first = match &keep {
                None => (batch.num_rows() > 0).then_some(0),
                Some(keep) => keep.set_indices().next(),
            };
            if let Some(at) = first {
                let rows = key.rows(&batch)?;
                return Ok(Some(Self {
                    batch,
                    keep,
                    rows,
                    at,
                }));
            }
        }
        Ok(None)
    }

    /// Move past `n` rows (dropped ones included), then past any dropped rows; `false` at the
    /// end of the batch.
    fn skip(&mut self, n: usize) -> bool {
        self.at += n;
        let end = self.batch.num_rows();
        if let Some(keep) = &self.keep {
            while self.at < end && !keep.value(self.at) {
                self.at += 1;
            }
        }
        self.at < end
    }
}

struct Input<'a> {
    stream: RemainsStream<'a>,
    current: Current,
}

impl Input<'_> {
    fn head(&self) -> arrow_row::Row<'_> {
        self.current.rows.row(self.current.at)
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
        let streams = streams
            .into_iter()
            .map(|s| s.map_ok(Remains::all).boxed())
            .collect();
        Self::of_remains(key, streams).await
    }

    /// Merge `streams` of batches with the rows that stay marked, each sorted by `key` (the
    /// dropped rows too); of equal keys, those of earlier streams first.
    pub async fn of_remains(key: Arc<SortKey>, streams: Vec<RemainsStream<'a>>) -> Result<Self> {
        let mut inputs = Vec::with_capacity(streams.len());
        for mut stream in streams {
            if let Some(current) = Current::next(&mut stream, &key).await? {
                inputs.push(Input { stream, current });
            }
        }
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        // stable: equal heads keep the inputs' order
        order.sort_by(|&a, &b| inputs[a].head().cmp(&inputs[b].head()));
        Ok(Self { key, inputs, order })
    }

    /// The next up to [`BATCH_ROWS`] rows in key order (fewer where inputs drop rows), or
    /// `None` when every input is done.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        // The batches the output's rows come from, each once; `held[i]`: input i's current
        // batch among them, if it gave rows yet. `taken` counts rows passed over too.
        let mut batches: Vec<(RecordBatch, Option<BooleanBuffer>)> = Vec::new();
        let mut held: Vec<Option<usize>> = vec![None; self.inputs.len()];
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        let mut taken = 0;
        while taken < BATCH_ROWS {
            let Some(&i) = self.order.first() else {
                break;
            };
            let input = &self.inputs[i];
            let current = &input.current;
            let end = match self.order.get(1) {
                // rows equal to the next input's head go first only from an earlier input
                Some(&j) => upto(current, &self.inputs[j], i < j),
                None => current.batch.num_rows(),
            };
            let n = (end - current.at).clamp(1, BATCH_ROWS - taken);
            let b = *held[i].get_or_insert_with(|| {
                batches.push((current.batch.clone(), current.keep.clone()));
                batches.len() - 1
            });
            pieces.push((b, current.at, n));
            taken += n;
            self.order.remove(0);
            let input = &mut self.inputs[i];
            if !input.current.skip(n) {
                held[i] = None;
                match Current::next(&mut input.stream, &self.key).await? {
                    Some(current) => input.current = current,
                    None => continue,
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
fn upto(input: &Current, next: &Input<'_>, ties: bool) -> usize {
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

/// One batch of the rows that stay of `pieces` (batch index in `batches`, first row, rows), in
/// order: a slice if there is one piece of a batch that drops nothing.
fn gather(
    batches: &[(RecordBatch, Option<BooleanBuffer>)],
    pieces: &[(usize, usize, usize)],
) -> Result<Option<RecordBatch>> {
    if let [(b, at, n)] = pieces
        && let Some((batch, None)) = batches.get(*b)
    {
        return Ok(Some(batch.slice(*at, *n)));
    }
    if pieces.is_empty() {
        return Ok(None);
    }
    let mut indices = Vec::with_capacity(pieces.iter().map(|p| p.2).sum());
    for &(b, at, n) in pieces {
        match batches.get(b).and_then(|(_, keep)| keep.as_ref()) {
            None => indices.extend((at..at + n).map(|r| (b, r))),
            Some(keep) => indices.extend(keep.slice(at, n).set_indices().map(|r| (b, at + r))),
        }
    }
    let refs: Vec<&RecordBatch> = batches.iter().map(|(batch, _)| batch).collect();
    Ok(Some(interleave_record_batch(&refs, &indices)?))
}
