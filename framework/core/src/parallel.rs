//! Several writers fed round-robin, each on its own task: Parquet encoding and compression
//! are the expensive part of a load, and one writer keeps one core busy. Destinations hand
//! each task a receiver of batches and get back what every task returned.

use std::future::Future;

use arrow_array::RecordBatch;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Batches in flight per writer.
const DEPTH: usize = 2;

/// Writer tasks fed round-robin; `T` is what each returns when its input ends (its files).
#[derive(Debug)]
pub struct RoundRobin<T> {
    senders: Vec<mpsc::Sender<RecordBatch>>,
    tasks: Vec<JoinHandle<Result<T>>>,
    next: usize,
}

fn joined<T>(result: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    result.map_err(|e| Error::internal(format!("a data file writer stopped: {e}")))?
}

impl<T: Send + 'static> RoundRobin<T> {
    /// Start `writers` tasks (at least one): `start(i, batches)` is task `i`'s work, which
    /// ends when `batches` does.
    pub fn spawn<F, Fut>(writers: usize, mut start: F) -> Self
    where
        F: FnMut(usize, mpsc::Receiver<RecordBatch>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (senders, tasks) = (0..writers.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(DEPTH);
                (tx, tokio::spawn(start(i, rx)))
            })
            .unzip();
        Self {
            senders,
            tasks,
            next: 0,
        }
    }

    /// Hand one batch to the next writer (empty batches are skipped).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let i = self.next % self.senders.len().max(1);
        self.next = self.next.wrapping_add(1);
        let Some(sender) = self.senders.get(i) else {
            return Err(Error::internal("no data file writer"));
        };
        if sender.send(batch).await.is_err() {
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
