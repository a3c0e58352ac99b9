//! The async face of the worker thread: the [`Sink`] the runtime writes into.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use pipe_framework::{CommitReport, CommitRequest, Error, Result, Sink};
use tokio::sync::{mpsc, oneshot};

use crate::worker::Command;

type Worker = std::thread::JoinHandle<std::result::Result<(), Error>>;

/// One run's staged writes into a DuckDB table.
#[derive(Debug)]
pub struct DuckDbSink {
    target: SchemaRef,
    tx: mpsc::Sender<Command>,
    worker: Option<Worker>,
}

impl DuckDbSink {
    pub(crate) fn new(target: SchemaRef, tx: mpsc::Sender<Command>, worker: Worker) -> Self {
        Self {
            target,
            tx,
            worker: Some(worker),
        }
    }

    /// Wait for the worker to exit and return why it stopped early.
    async fn worker_error(&mut self) -> Error {
        let Some(worker) = self.worker.take() else {
            return Error::internal("the DuckDB worker already stopped");
        };
        match tokio::task::spawn_blocking(move || worker.join()).await {
            Ok(Ok(Err(e))) => e,
            Ok(Ok(Ok(()))) => Error::internal("the DuckDB worker stopped unexpectedly"),
            Ok(Err(_)) | Err(_) => Error::internal("the DuckDB worker panicked"),
        }
    }

    async fn join(&mut self) {
        if let Some(worker) = self.worker.take() {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
    }
}

#[async_trait]
impl Sink for DuckDbSink {
    fn schema(&self) -> SchemaRef {
        self.target.clone()
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if self.tx.send(Command::Write(batch)).await.is_err() {
            return Err(self.worker_error().await);
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>, req: CommitRequest) -> Result<CommitReport> {
        let (reply_tx, reply_rx) = oneshot::channel();
        if self.tx.send(Command::Commit(req, reply_tx)).await.is_err() {
            return Err(self.worker_error().await);
        }
        let result = match reply_rx.await {
            Ok(result) => result,
            Err(_) => Err(self.worker_error().await),
        };
        self.join().await;
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        let _ = self.tx.send(Command::Abort).await;
        self.join().await;
        Ok(())
    }
}
