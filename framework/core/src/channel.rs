//! Bounded channels of Arrow record batches with a schema fixed at creation.
//!
//! The capacity is the memory bound of a pipeline: a slow destination makes the source wait
//! (backpressure) instead of buffering the table. Every channel counts the rows, batches and
//! bytes that went through it, which feeds the progress bar and the run summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Counters of what went through a channel; cheap to read from another task.
#[derive(Debug, Default)]
pub struct ChannelStats {
    rows: AtomicU64,
    batches: AtomicU64,
    bytes: AtomicU64,
}

impl ChannelStats {
    /// Rows sent so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Batches sent so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// In-memory Arrow bytes sent so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn record(&self, batch: &RecordBatch) {
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
    }
}

/// What travels through a channel: batches, then an explicit end marker. A channel whose
/// senders all vanish without the end marker was abandoned by a failing stage.
#[derive(Debug)]
enum Message {
    Batch(RecordBatch),
    End,
}

/// Create a bounded batch channel: at most `capacity` batches wait in it.
pub fn batch_channel(schema: SchemaRef, capacity: usize) -> (BatchSender, BatchReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let stats = Arc::new(ChannelStats::default());
    (
        BatchSender {
            schema: schema.clone(),
            tx,
            stats: stats.clone(),
            clones: Arc::new(()),
        },
        BatchReceiver {
            schema,
            rx,
            stats,
            ended: false,
        },
    )
}

/// The sending half. Cloneable, so parallel readers can share one channel.
#[derive(Debug, Clone)]
pub struct BatchSender {
    schema: SchemaRef,
    tx: mpsc::Sender<Message>,
    stats: Arc<ChannelStats>,
    /// Counts the live clones: the end marker may only come from the last one.
    clones: Arc<()>,
}

impl BatchSender {
    /// The schema every batch must have.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The channel's counters.
    pub fn stats(&self) -> Arc<ChannelStats> {
        self.stats.clone()
    }

    /// Send a batch, waiting while the channel is full. Empty batches are skipped.
    ///
    /// Errors if the batch has another schema than the channel ([`crate::ErrorKind::Internal`]:
    /// a stage must convert its output) or if the receiver is gone (the run is being
    /// cancelled: [`crate::ErrorKind::Cancelled`]).
    pub async fn send(&self, batch: RecordBatch) -> Result<()> {
        self.check(&batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.stats.record(&batch);
        self.tx
            .send(Message::Batch(batch))
            .await
            .map_err(|_| Error::cancelled("the downstream stage stopped"))
    }

    /// Mark the end of the stream: the receiver's `recv` returns `Ok(None)` after the last
    /// batch. Called by the runtime once the producing stage returned `Ok`; a stage that fails
    /// never finishes its output, so nothing downstream mistakes a failure for the end.
    ///
    /// Errors if another clone of this sender is still alive: a stage that returned while a
    /// helper of its could still send would lose those batches after the end marker.
    pub(crate) async fn finish(self) -> Result<()> {
        if Arc::strong_count(&self.clones) > 1 {
            return Err(Error::internal(
                "a stage finished while clones of its batch sender were still alive; \
                 their batches would be lost",
            ));
        }
        self.tx
            .send(Message::End)
            .await
            .map_err(|_| Error::cancelled("the downstream stage stopped"))
    }

    /// Like [`BatchSender::send`], for code running on a blocking thread (decoders, drivers).
    /// Must not be called from an async context.
    pub fn blocking_send(&self, batch: RecordBatch) -> Result<()> {
        self.check(&batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.stats.record(&batch);
        self.tx
            .blocking_send(Message::Batch(batch))
            .map_err(|_| Error::cancelled("the downstream stage stopped"))
    }

    /// Whether the receiving side has gone away (the run is over or cancelled).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn check(&self, batch: &RecordBatch) -> Result<()> {
        let got = batch.schema_ref();
        if Arc::ptr_eq(got, &self.schema) || got.fields() == self.schema.fields() {
            return Ok(());
        }
        Err(Error::internal(format!(
            "batch schema does not match the channel: expected {}, got {}",
            describe(&self.schema),
            describe(got)
        )))
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct BatchReceiver {
    schema: SchemaRef,
    rx: mpsc::Receiver<Message>,
    stats: Arc<ChannelStats>,
    ended: bool,
}

impl BatchReceiver {
    /// The schema of every batch that arrives.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The channel's counters.
    pub fn stats(&self) -> Arc<ChannelStats> {
        self.stats.clone()
    }

    /// The next batch; `Ok(None)` once the upstream stage finished successfully. An error
    /// ([`crate::ErrorKind::Cancelled`]) if it stopped without finishing: a failed or
    /// cancelled upstream is never mistaken for the end of the data.
    pub async fn recv(&mut self) -> Result<Option<RecordBatch>> {
        let msg = if self.ended {
            None
        } else {
            self.rx.recv().await
        };
        self.handle(msg)
    }

    /// Like [`BatchReceiver::recv`], for a blocking thread.
    pub fn blocking_recv(&mut self) -> Result<Option<RecordBatch>> {
        let msg = if self.ended {
            None
        } else {
            self.rx.blocking_recv()
        };
        self.handle(msg)
    }

    fn handle(&mut self, msg: Option<Message>) -> Result<Option<RecordBatch>> {
        match msg {
            Some(Message::Batch(b)) => Ok(Some(b)),
            Some(Message::End) => {
                self.ended = true;
                Ok(None)
            }
            None if self.ended => Ok(None),
            None => Err(Error::cancelled(
                "the upstream stage stopped before finishing",
            )),
        }
    }
}

fn describe(schema: &arrow_schema::Schema) -> String {
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    format!("[{}]", fields.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    fn schema(name: &str, dt: DataType) -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new(name, dt, true)]))
    }

    #[tokio::test]
    async fn sends_batches_of_the_channel_schema_and_counts_them() {
        let s = schema("id", DataType::Int64);
        let (tx, mut rx) = batch_channel(s.clone(), 2);
        let batch = RecordBatch::try_new(s, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))])
            .expect("valid batch");
        tx.send(batch).await.expect("send");
        tx.finish().await.expect("finish");
        let got = rx.recv().await.expect("ok").expect("one batch");
        assert_eq!(got.num_rows(), 3);
        assert!(rx.recv().await.expect("ok").is_none());
        assert_eq!(rx.stats().rows(), 3);
        assert_eq!(rx.stats().batches(), 1);
    }

    #[tokio::test]
    async fn a_sender_dropped_without_finishing_is_an_error_not_the_end() {
        let (tx, mut rx) = batch_channel(schema("id", DataType::Int64), 2);
        drop(tx);
        let err = rx.recv().await.expect_err("abandoned");
        assert_eq!(err.kind(), crate::ErrorKind::Cancelled);
    }

    #[tokio::test]
    async fn finishing_while_a_clone_lives_is_an_error() {
        let (tx, _rx) = batch_channel(schema("id", DataType::Int64), 2);
        let clone = tx.clone();
        let err = tx.finish().await.expect_err("a clone is alive");
        assert_eq!(err.kind(), crate::ErrorKind::Internal);
        clone.finish().await.expect("the last one may finish");
    }

    #[tokio::test]
    async fn a_batch_of_another_schema_is_an_error_not_a_panic() {
        let (tx, _rx) = batch_channel(schema("id", DataType::Int64), 2);
        let other = schema("id", DataType::Utf8);
        let batch = RecordBatch::try_new(other, vec![Arc::new(StringArray::from(vec!["x"]))])
            .expect("valid batch");
        let err = tx.send(batch).await.expect_err("schema mismatch");
        assert_eq!(err.kind(), crate::ErrorKind::Internal);
        assert!(
            err.message()
                .contains("expected [id: Int64], got [id: Utf8]")
        );
    }
}
