//! The async face of the worker thread: the [`Sink`] the runtime writes into.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use pipe_framework::{CommitReport, CommitRequest, Error, Result, Sink};
use tokio::sync::{mpsc, oneshot};

use crate::stream::Message;
use crate::wire;
use crate::worker::{Command, Ready};

type Worker = std::thread::JoinHandle<std::result::Result<(), Error>>;

/// One run's staged writes into a DuckDB table.
#[derive(Debug)]
pub struct DuckDbSink {
    target: SchemaRef,
    /// What batches become on the way into DuckDB (see `wire.rs`).
    streamed: SchemaRef,
    /// Merging: the arrival number of the next row.
    next_seq: Option<i64>,
    data: Option<mpsc::Sender<Message>>,
    commands: mpsc::Sender<Command>,
    worker: Option<Worker>,
}

impl DuckDbSink {
    pub(crate) fn new(ready: Ready, commands: mpsc::Sender<Command>, worker: Worker) -> Self {
        Self {
            target: ready.target,
            streamed: ready.streamed,
            next_seq: ready.sequenced.then_some(0),
            data: Some(ready.data),
            commands,
            worker: Some(worker),
        }
    }

    /// Wait for the worker to exit and return why it stopped early.
    async fn worker_error(&mut self) -> Error {
        self.data = None;
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

    async fn send(&mut self, message: Message) -> Result<()> {
        let sent = match &self.data {
            Some(data) => data.send(message).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.worker_error().await)
        }
    }
}

#[async_trait]
impl Sink for DuckDbSink {
    fn schema(&self) -> SchemaRef {
        self.target.clone()
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let rows = batch.num_rows() as i64;
        let batch = wire::to_stream(batch, &self.streamed, self.next_seq)?;
        if let Some(seq) = &mut self.next_seq {
            *seq += rows;
        }
        self.send(Message::Batch(batch)).await
    }

    async fn commit(mut self: Box<Self>, req: CommitRequest) -> Result<CommitReport> {
        self.send(Message::End).await?;
        self.data = None;
        let (reply_tx, reply_rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Commit(Box::new(req), reply_tx))
            .await
            .is_err()
        {
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
        // Dropping the data sender without `End` fails the running INSERT, which rolls back.
        self.data = None;
        let _ = self.commands.send(Command::Abort).await;
        self.join().await;
        Ok(())
    }
}
