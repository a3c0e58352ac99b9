//! The async face of the worker thread: the [`Sink`] the runtime writes into.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use pipe_framework::{CommitReport, CommitRequest, Error, Result, Sink};
use tokio::sync::{mpsc, oneshot};

use crate::stream::Message;
use crate::worker::{Command, Ready};

type Worker = std::thread::JoinHandle<std::result::Result<(), Error>>;

/// One run's staged writes into a DuckDB table.
#[derive(Debug)]
pub struct DuckDbSink {
    target: SchemaRef,
    /// Set when merging: batches get an arrival sequence column.
    sequenced: Option<SchemaRef>,
    next_seq: i64,
    data: Option<mpsc::Sender<Message>>,
    commands: mpsc::Sender<Command>,
    worker: Option<Worker>,
}

impl DuckDbSink {
    pub(crate) fn new(ready: Ready, commands: mpsc::Sender<Command>, worker: Worker) -> Self {
        let sequenced = (ready.streamed.fields().len() != ready.target.fields().len())
            .then(|| ready.streamed.clone());
        Self {
            target: ready.target,
            sequenced,
            next_seq: 0,
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
        let batch = match &self.sequenced {
            Some(schema) => {
                let rows = batch.num_rows() as i64;
                let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
                let seq = Int64Array::from_iter_values(self.next_seq..self.next_seq + rows);
                columns.push(Arc::new(seq));
                self.next_seq += rows;
                RecordBatch::try_new(schema.clone(), columns)?
            }
            None => batch,
        };
        self.send(Message::Batch(batch)).await
    }

    async fn commit(mut self: Box<Self>, req: CommitRequest) -> Result<CommitReport> {
        self.send(Message::End).await?;
        self.data = None;
        let (reply_tx, reply_rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Commit(req, reply_tx))
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
