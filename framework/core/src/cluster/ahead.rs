//! Reading ahead: a stream driven on its own task, a few batches ahead of its reader, so that
//! decoding the files a merge rewrites runs on another core than the merge that consumes them.

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Batches a read-ahead task may decode before its reader takes them.
pub const AHEAD: usize = 4;

/// `stream`, polled on a task of its own up to `depth` batches ahead of the returned stream.
/// The task stops at the first error (handed on) or when the returned stream is dropped; a
/// task that panics ends the stream with an error, never early as if it were complete.
pub fn read_ahead<T: Send + 'static>(
    stream: BoxStream<'static, Result<T>>,
    depth: usize,
) -> BoxStream<'static, Result<T>> {
    let (tx, rx) = mpsc::channel(depth.max(1));
    let task = tokio::spawn(async move {
        let mut stream = stream;
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    futures::stream::unfold(
        Ahead {
            rx,
            task: Some(task),
        },
        next,
    )
    .boxed()
}

struct Ahead<T> {
    rx: mpsc::Receiver<Result<T>>,
    task: Option<JoinHandle<()>>,
}

impl<T> Drop for Ahead<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn next<T>(mut ahead: Ahead<T>) -> Option<(Result<T>, Ahead<T>)> {
    if let Some(item) = ahead.rx.recv().await {
        return Some((item, ahead));
    }
    // The channel closed: the task ended. Only a clean end ends the stream.
    let task = ahead.task.take()?;
    match task.await {
        Ok(()) => None,
        Err(e) => Some((
            Err(Error::internal(format!("reading ahead stopped: {e}"))),
            ahead,
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};
    use futures::TryStreamExt;

    use super::*;

    fn batch(v: i64) -> Result<RecordBatch> {
        Ok(RecordBatch::try_from_iter([(
            "k",
            Arc::new(Int64Array::from(vec![v])) as _,
        )])?)
    }

    #[tokio::test]
    async fn hands_on_every_batch_in_order() {
        let stream = futures::stream::iter((0..100).map(batch)).boxed();
        let got: Vec<RecordBatch> = read_ahead(stream, 3).try_collect().await.unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!(got[99], batch(99).unwrap());
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_with_it() {
        let items = vec![batch(1), Err(Error::user("broken file")), batch(2)];
        let got: Vec<Result<RecordBatch>> = read_ahead(futures::stream::iter(items).boxed(), 2)
            .collect()
            .await;
        assert_eq!(got.len(), 2);
        assert!(
            got[1]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("broken file")
        );
    }

    #[tokio::test]
    async fn a_panic_is_an_error_not_an_early_end() {
        let stream = futures::stream::iter(0..3)
            .map(|i| {
                if i == 2 {
                    panic!("decoder bug")
                } else {
                    batch(i)
                }
            })
            .boxed();
        let got: Vec<Result<RecordBatch>> = read_ahead(stream, 1).collect().await;
        assert!(got.last().unwrap().is_err(), "{got:?}");
    }
}
