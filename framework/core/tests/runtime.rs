//! The runtime's commit protocol, with in-memory components: a sink commits only when every
//! stage succeeded, the first real error is reported, and cancellation aborts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::sync::{Arc, Mutex};

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use pipe_framework::pipeline::{MetadataConfig, RuntimeConfig};
use pipe_framework::{
    BatchSender, CommitReport, CommitRequest, Destination, Error, ErrorKind, Pipeline,
    PrepareRequest, Result, RunContext, RunProgress, RunStatus, Sink, Source, SourceReport, Stage,
    StageReport, WriteSpec, runtime,
};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]))
}

#[derive(Debug)]
struct Numbers {
    batches: usize,
    fail_at: Option<usize>,
}

#[async_trait]
impl Source for Numbers {
    async fn schema(&self) -> Result<SchemaRef> {
        Ok(schema())
    }

    async fn read(&self, _ctx: &RunContext, out: BatchSender) -> Result<SourceReport> {
        for i in 0..self.batches {
            if self.fail_at == Some(i) {
                return Err(Error::user(format!("bad input in batch {i}")));
            }
            let ids: Vec<i64> = (0..10).map(|j| (i * 10 + j) as i64).collect();
            out.send(RecordBatch::try_new(
                schema(),
                vec![Arc::new(Int64Array::from(ids))],
            )?)
            .await?;
        }
        Ok(SourceReport {
            bytes_read: 1,
            parts: 1,
            ..Default::default()
        })
    }
}

/// What happened to the sink, observed from outside.
#[derive(Debug, Default)]
struct Log {
    staged: usize,
    committed: Option<usize>,
    aborted: bool,
}

#[derive(Debug)]
struct MemoryDestination(Arc<Mutex<Log>>);

#[derive(Debug)]
struct MemorySink(Arc<Mutex<Log>>);

#[async_trait]
impl Destination for MemoryDestination {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn prepare(&self, _req: PrepareRequest) -> Result<Box<dyn Sink>> {
        Ok(Box::new(MemorySink(self.0.clone())))
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn schema(&self) -> SchemaRef {
        schema()
    }
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.0.lock().unwrap().staged += batch.num_rows();
        Ok(())
    }
    async fn commit(self: Box<Self>, _req: CommitRequest) -> Result<CommitReport> {
        let mut log = self.0.lock().unwrap();
        log.committed = Some(log.staged);
        Ok(CommitReport {
            rows_inserted: log.staged as u64,
            ..Default::default()
        })
    }
    async fn abort(self: Box<Self>) -> Result<()> {
        self.0.lock().unwrap().aborted = true;
        Ok(())
    }
}

/// A stage that fails in `finish` (a whole-run check), or passes everything.
#[derive(Debug)]
struct FinishCheck {
    fail: bool,
}

#[async_trait]
impl Stage for FinishCheck {
    fn name(&self) -> &str {
        "check"
    }
    fn bind(&mut self, _schema: &SchemaRef, _ctx: &pipe_framework::RunContext) -> Result<()> {
        Ok(())
    }
    async fn process(&mut self, batch: RecordBatch) -> Result<pipe_framework::StageOutput> {
        Ok(pipe_framework::StageOutput::pass(batch))
    }
    async fn finish(&mut self) -> Result<StageReport> {
        if self.fail {
            return Err(Error::user("row count below the minimum"));
        }
        Ok(StageReport::default())
    }
}

fn pipeline(source: Numbers, stage_fails: bool, log: &Arc<Mutex<Log>>) -> Pipeline {
    Pipeline {
        name: "t".into(),
        description: None,
        file: "t.toml".into(),
        source_type: "numbers".into(),
        source: Arc::new(source),
        stages: vec![Box::new(FinishCheck { fail: stage_fails })],
        destination_type: "memory".into(),
        destination: Arc::new(MemoryDestination(log.clone())),
        write: WriteSpec::default(),
        metadata: MetadataConfig::default(),
        runtime: RuntimeConfig {
            channel_capacity: 1,
            ..RuntimeConfig::default()
        },
        state: Default::default(),
        schedule: None,
    }
}

async fn run(p: Pipeline) -> runtime::RunResult {
    runtime::run(p, RunContext::new("t"), Arc::new(RunProgress::default())).await
}

#[tokio::test]
async fn commits_every_row_when_all_stages_succeed() {
    let log = Arc::new(Mutex::new(Log::default()));
    let r = run(pipeline(
        Numbers {
            batches: 50,
            fail_at: None,
        },
        false,
        &log,
    ))
    .await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.summary.status, RunStatus::Succeeded);
    assert_eq!(r.summary.rows_read, 500);
    assert_eq!(log.lock().unwrap().committed, Some(500));
}

#[tokio::test]
async fn a_source_failure_mid_stream_aborts_and_is_the_reported_error() {
    let log = Arc::new(Mutex::new(Log::default()));
    let r = run(pipeline(
        Numbers {
            batches: 50,
            fail_at: Some(30),
        },
        false,
        &log,
    ))
    .await;
    let err = r.error.expect("fails");
    assert_eq!(err.kind(), ErrorKind::User);
    assert!(
        err.chain().join(": ").contains("bad input in batch 30"),
        "{err:?}"
    );
    let log = log.lock().unwrap();
    assert_eq!(log.committed, None);
    assert!(log.aborted);
    assert!(log.staged > 0, "rows were staged before the failure");
}

#[tokio::test]
async fn a_whole_run_check_failing_in_finish_commits_nothing() {
    let log = Arc::new(Mutex::new(Log::default()));
    let r = run(pipeline(
        Numbers {
            batches: 5,
            fail_at: None,
        },
        true,
        &log,
    ))
    .await;
    assert!(
        r.error
            .expect("fails")
            .chain()
            .join(": ")
            .contains("row count below")
    );
    assert_eq!(log.lock().unwrap().committed, None);
}

#[tokio::test]
async fn cancellation_aborts_and_reports_cancelled() {
    let log = Arc::new(Mutex::new(Log::default()));
    let ctx = RunContext::new("t");
    ctx.cancel.cancel();
    let p = pipeline(
        Numbers {
            batches: 5,
            fail_at: None,
        },
        false,
        &log,
    );
    let r = runtime::run(p, ctx, Arc::new(RunProgress::default())).await;
    assert_eq!(r.summary.status, RunStatus::Cancelled);
    assert_eq!(log.lock().unwrap().committed, None);
}
