//! Several writers, each on its own task: Parquet encoding and compression are the expensive
//! part of a load, and one writer keeps one core busy. Destinations hand each task a receiver
//! of [`Piece`]s and get back what every task returned.
//!
//! Two ways to share the rows out:
//! - [`RoundRobin::spawn`]: batch by batch, in turn (every file spans the run's key range);
//! - [`RoundRobin::clustered`]: rows sorted by a key go to one writer until a segment's worth
//!   of bytes has gone, then that writer is told to close its files ([`Piece::Cut`]) and the
//!   next one takes the next segment — so every file holds one contiguous key range. A writer
//!   may queue up to a segment while it encodes (bounded by a byte budget, not a batch count),
//!   which is what lets the writers work at the same time on consecutive key ranges.

use std::future::Future;
use std::sync::Arc;

use arrow_array::RecordBatch;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Data files a merge scans for its keys at once (each decoded on a task of its own).
pub const SCANS_AT_ONCE: usize = 4;

/// Batches in flight per writer, round-robin.
const DEPTH: usize = 2;

/// Queue capacity per writer, clustered (the byte budget is the real bound).
const CLUSTERED_DEPTH: usize = 4096;

/// What a writer task receives.
#[derive(Debug)]
pub enum Piece {
    /// Rows to write; drop the [`Held`] once they are written.
    Rows(RecordBatch, Held),
    /// Close the files open now: the rows that follow belong to a later key range.
    Cut,
}

/// A batch's share of the writers' byte budget, returned when dropped.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// Clustered dispatch: which writer takes the current segment, and how much it has taken.
#[derive(Debug)]
struct Segments {
    bytes: usize,
    taken: usize,
    budget: Arc<Semaphore>,
    budget_kib: u32,
}

/// Writer tasks; `T` is what each returns when its input ends (its files).
#[derive(Debug)]
pub struct RoundRobin<T> {
    senders: Vec<mpsc::Sender<Piece>>,
    tasks: Vec<JoinHandle<Result<T>>>,
    next: usize,
    segments: Option<Segments>,
}

fn joined<T>(result: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    result.map_err(|e| Error::internal(format!("a data file writer stopped: {e}")))?
}

impl<T: Send + 'static> RoundRobin<T> {
    /// [`RoundRobin::clustered`] with `segment_bytes`, else [`RoundRobin::spawn`].
    pub fn new<F, Fut>(writers: usize, segment_bytes: Option<usize>, start: F) -> Self
    where
        F: FnMut(usize, mpsc::Receiver<Piece>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        match segment_bytes {
            Some(bytes) => Self::clustered(writers, bytes, start),
            None => Self::spawn(writers, start),
        }
    }

    /// Start `writers` tasks (at least one) fed batch by batch in turn: `start(i, pieces)` is
    /// task `i`'s work, which ends when `pieces` does.
    pub fn spawn<F, Fut>(writers: usize, start: F) -> Self
    where
        F: FnMut(usize, mpsc::Receiver<Piece>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        Self::start(writers, DEPTH, None, start)
    }

    /// Start `writers` tasks fed sorted rows a segment of `segment_bytes` (Arrow bytes) at a
    /// time, each segment ended by a [`Piece::Cut`]. The writers queue at most
    /// `writers × segment_bytes` between them.
    pub fn clustered<F, Fut>(writers: usize, segment_bytes: usize, start: F) -> Self
    where
        F: FnMut(usize, mpsc::Receiver<Piece>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let kib = (writers.max(1) * segment_bytes / 1024).clamp(1, u32::MAX as usize >> 4);
        let kib = u32::try_from(kib).unwrap_or(u32::MAX >> 4);
        let segments = Segments {
            bytes: segment_bytes.max(1),
            taken: 0,
            budget: Arc::new(Semaphore::new(kib as usize)),
            budget_kib: kib,
        };
        Self::start(writers, CLUSTERED_DEPTH, Some(segments), start)
    }

    fn start<F, Fut>(writers: usize, depth: usize, segments: Option<Segments>, mut start: F) -> Self
    where
        F: FnMut(usize, mpsc::Receiver<Piece>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (senders, tasks) = (0..writers.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(depth);
                (tx, tokio::spawn(start(i, rx)))
            })
            .unzip();
        Self {
            senders,
            tasks,
            next: 0,
            segments,
        }
    }

    /// Hand one batch to a writer (empty batches are skipped): the next one in turn, or, when
    /// clustered, the one taking the current segment.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let i = self.next % self.senders.len().max(1);
        let Some(segments) = &mut self.segments else {
            self.next = self.next.wrapping_add(1);
            return self.send(i, Piece::Rows(batch, Held(None))).await;
        };
        let bytes = crate::cluster::batch_bytes(&batch);
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, segments.budget_kib);
        let permit = Arc::clone(&segments.budget)
            .acquire_many_owned(kib)
            .await
            .map_err(|_| Error::internal("the writers' byte budget was closed"))?;
        segments.taken += bytes;
        let cut = segments.taken >= segments.bytes;
        if cut {
            segments.taken = 0;
            self.next = self.next.wrapping_add(1);
        }
        self.send(i, Piece::Rows(batch, Held(Some(permit)))).await?;
        if cut {
            self.send(i, Piece::Cut).await?;
        }
        Ok(())
    }

    async fn send(&mut self, i: usize, piece: Piece) -> Result<()> {
        let Some(sender) = self.senders.get(i) else {
            return Err(Error::internal("no data file writer"));
        };
        if sender.send(piece).await.is_err() {
            // The writer failed: its task holds the error.
            let task = self.tasks.swap_remove(i);
            self.senders.swap_remove(i);
            joined(task.await)?;
            return Err(Error::internal("a data file writer stopped early"));
        }
        Ok(())
    }

    /// End every writer's input and wait for them: what each returned, or the first error.
    pub async fn close(self) -> Result<Vec<T>> {
        drop(self.senders);
        let mut out = Vec::with_capacity(self.tasks.len());
        let mut first_error = None;
        for task in self.tasks {
            match joined(task.await) {
                Ok(t) => out.push(t),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// A spawned task, aborted when dropped unfinished (a stream of them dropped early, by an
/// error, leaves nothing running).
struct Task<R>(JoinHandle<R>);

impl<R> Future for Task<R> {
    type Output = std::result::Result<R, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<R> Drop for Task<R> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `work` on a task of its own, started now: its result when awaited (an error if the task
/// panicked). Dropping the returned future unfinished aborts the task.
pub fn spawn<Fut, R>(work: Fut) -> impl Future<Output = Result<R>> + Send + use<Fut, R>
where
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let task = Task(tokio::spawn(work));
    async move {
        task.await
            .map_err(|e| Error::internal(format!("a task stopped: {e}")))
    }
}

/// `work(item)` for every item, each on a task of its own (so CPU-bound work such as decoding
/// data files uses every core), at most `at_once` at a time; results in the items' order.
pub fn spawn_each<T, F, Fut, R>(
    items: Vec<T>,
    at_once: usize,
    work: F,
) -> futures::stream::BoxStream<'static, Result<R>>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    use futures::StreamExt;
    futures::stream::iter(items)
        .map(move |item| Task(tokio::spawn(work(item))))
        .buffered(at_once.max(1))
        .map(|joined| joined.map_err(|e| Error::internal(format!("a task stopped: {e}"))))
        .boxed()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};

    use super::*;

    fn batch(from: i64, n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "k",
            Arc::new(Int64Array::from_iter_values(from..from + n)) as _,
        )])
        .unwrap()
    }

    /// Each task returns its segments: the first key of every run of rows between cuts.
    async fn segments(mut rx: mpsc::Receiver<Piece>) -> Result<Vec<Vec<i64>>> {
        let mut out = vec![Vec::new()];
        while let Some(piece) = rx.recv().await {
            match piece {
                Piece::Rows(b, _held) => {
                    let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    out.last_mut().unwrap().push(k.value(0));
                }
                Piece::Cut => out.push(Vec::new()),
            }
        }
        out.retain(|s| !s.is_empty());
        Ok(out)
    }

    #[tokio::test]
    async fn clustered_writers_take_whole_segments_in_turn() {
        let one = crate::cluster::batch_bytes(&batch(0, 1000));
        let mut w = RoundRobin::clustered(2, 3 * one, |_, rx| segments(rx));
        for i in 0..10 {
            w.write(batch(i * 1000, 1000)).await.unwrap();
        }
        let got = w.close().await.unwrap();
        assert_eq!(got[0], [vec![0, 1000, 2000], vec![6000, 7000, 8000]]);
        assert_eq!(got[1], [vec![3000, 4000, 5000], vec![9000]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawned_work_comes_back_in_order() {
        use futures::TryStreamExt;
        let got: Vec<u64> = spawn_each((0..50u64).collect(), 4, |i| async move {
            // later items finish first
            tokio::time::sleep(std::time::Duration::from_millis(50 - i)).await;
            i * 2
        })
        .try_collect()
        .await
        .unwrap();
        assert_eq!(got, (0..50).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn round_robin_writers_alternate_batches() {
        let mut w = RoundRobin::spawn(2, |_, rx| segments(rx));
        for i in 0..4 {
            w.write(batch(i * 10, 10)).await.unwrap();
        }
        let got = w.close().await.unwrap();
        assert_eq!(got[0], [vec![0, 20]]);
        assert_eq!(got[1], [vec![10, 30]]);
    }
}
