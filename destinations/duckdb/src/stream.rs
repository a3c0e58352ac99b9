//! Batches streamed into DuckDB through a parallel table function.
//!
//! The worker runs `INSERT INTO <table> SELECT * FROM pipe_stream('<id>')`; DuckDB's own
//! threads call [`StreamScan::func`], each taking the next 2048-row slice of the next batch the
//! sink sent and converting it into a DuckDB vector in parallel, so the insert (and DuckDB's
//! compression of the new row groups) runs on every core. Batches are dropped as soon as
//! they are consumed: memory is bounded by the channel. (DuckDB's appender does the same work
//! on one thread; the `arrow()` table function of duckdb-rs never frees its batches.)
//!
//! The stream ends only on an explicit [`Message::End`]; a sender dropped without it (an
//! aborted run) makes the scan fail, so the INSERT fails and the transaction rolls back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{
    BindInfo, InitInfo, TableFunctionInfo, VTab, record_batch_to_duckdb_data_chunk,
    to_duckdb_logical_type_for_field,
};
use tokio::sync::mpsc;

/// The table function's name.
pub(crate) const FUNCTION: &str = "pipe_stream";

/// Upper bound on scan threads; the real number is DuckDB's `threads` setting.
const MAX_SCAN_THREADS: u64 = 256;

/// DuckDB's vector size (`STANDARD_VECTOR_SIZE` of the bundled build): rows per scan call.
const VECTOR_ROWS: usize = 2048;

/// What the sink sends.
#[derive(Debug)]
pub(crate) enum Message {
    /// Rows of the stream's schema.
    Batch(RecordBatch),
    /// No more rows: the scan ends normally.
    End,
}

#[derive(Debug)]
struct State {
    rx: mpsc::Receiver<Message>,
    current: Option<RecordBatch>,
    offset: usize,
    ended: bool,
}

/// One run's stream, shared by DuckDB's scan threads.
#[derive(Debug)]
pub(crate) struct Stream {
    schema: SchemaRef,
    state: Mutex<State>,
}

impl Stream {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Make every pending and future send fail (the insert failed: nobody will read).
    pub(crate) fn close(&self) {
        self.lock().rx.close();
    }

    /// The next slice of at most one vector, `None` at the end of the stream.
    fn next_slice(&self) -> Result<Option<RecordBatch>, String> {
        let mut st = self.lock();
        loop {
            if st.ended {
                return Ok(None);
            }
            if let Some(batch) = &st.current
                && st.offset < batch.num_rows()
            {
                let len = VECTOR_ROWS.min(batch.num_rows() - st.offset);
                let slice = batch.slice(st.offset, len);
                st.offset += len;
                return Ok(Some(slice));
            }
            st.current = None;
            match st.rx.blocking_recv() {
                Some(Message::Batch(b)) => {
                    st.current = Some(b);
                    st.offset = 0;
                }
                Some(Message::End) => st.ended = true,
                None => return Err("the run was aborted before its data ended".into()),
            }
        }
    }
}

/// A stream id unique in this process, readable in logs.
pub(crate) fn unique_id(run_id: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{run_id}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

static STREAMS: LazyLock<Mutex<HashMap<String, Arc<Stream>>>> = LazyLock::new(Default::default);

fn streams() -> MutexGuard<'static, HashMap<String, Arc<Stream>>> {
    STREAMS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A registered stream; unregistered when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    id: String,
    stream: Arc<Stream>,
}

impl Registration {
    /// Register a stream of `schema`; returns the registration and the sender feeding it
    /// (`capacity` batches in flight).
    pub(crate) fn new(
        id: &str,
        schema: SchemaRef,
        capacity: usize,
    ) -> (Self, mpsc::Sender<Message>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stream = Arc::new(Stream {
            schema,
            state: Mutex::new(State {
                rx,
                current: None,
                offset: 0,
                ended: false,
            }),
        });
        streams().insert(id.to_string(), stream.clone());
        (
            Self {
                id: id.to_string(),
                stream,
            },
            tx,
        )
    }

    pub(crate) fn stream(&self) -> &Stream {
        &self.stream
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        streams().remove(&self.id);
    }
}

/// The `pipe_stream(id)` table function.
#[derive(Debug)]
pub(crate) struct StreamScan;

impl VTab for StreamScan {
    type InitData = ();
    type BindData = Arc<Stream>;

    fn bind(bind: &BindInfo) -> Result<Self::BindData, Box<dyn std::error::Error>> {
        let id = bind.get_parameter(0).to_string();
        let stream = streams()
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("no pipe stream `{id}` is registered"))?;
        for field in stream.schema.fields() {
            bind.add_result_column(field.name(), to_duckdb_logical_type_for_field(field)?);
        }
        Ok(stream)
    }

    fn init(init: &InitInfo) -> Result<Self::InitData, Box<dyn std::error::Error>> {
        // Every DuckDB thread may scan (DuckDB caps this at its `threads` setting).
        init.set_max_threads(MAX_SCAN_THREADS);
        Ok(())
    }

    fn func(
        func: &TableFunctionInfo<Self>,
        output: &mut DataChunkHandle,
    ) -> Result<(), Box<dyn std::error::Error>> {
        match func.get_bind_data().next_slice()? {
            Some(slice) => record_batch_to_duckdb_data_chunk(&slice, output)?,
            None => output.set_len(0),
        }
        Ok(())
    }

    fn parameters() -> Option<Vec<LogicalTypeHandle>> {
        Some(vec![LogicalTypeHandle::from(LogicalTypeId::Varchar)])
    }
}
