//! The exec source: one program run per pipeline run.

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use pipe_framework::{
    BatchSender, Error, Result, RunContext, RunSlots, Source, SourceReport, State,
};
use serde_json::json;
use tracing::info;

use crate::config::ExecConfig;
use crate::process::{Running, exit_text, kill_group};

/// The prefix of the state keys an exec source commits (`exec.<key>`).
const STATE_PREFIX: &str = "exec.";

/// Reads the Arrow IPC stream of a program.
#[derive(Debug)]
pub struct ExecSource {
    config: ExecConfig,
    pipeline: String,
    /// The program a run started to learn the schema, handed to its read.
    started: RunSlots<Running>,
}

impl ExecSource {
    /// A source for `config` (no process starts until the schema is asked for).
    pub fn new(config: ExecConfig, pipeline: &str) -> Result<Self> {
        if config.command.is_empty() {
            return Err(Error::user("`command` is empty: name the program to run"));
        }
        Ok(Self {
            config,
            pipeline: pipeline.to_string(),
            started: RunSlots::default(),
        })
    }

    /// The JSON the program reads from its standard input.
    fn input(&self, ctx: &RunContext) -> serde_json::Value {
        let state: serde_json::Map<String, serde_json::Value> = ctx
            .committed
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(STATE_PREFIX)
                    .map(|k| (k.to_string(), serde_json::Value::String(v.clone())))
            })
            .collect();
        let config = serde_json::to_value(&self.config.config).unwrap_or_default();
        json!({
            "protocol": 1,
            "pipeline": self.pipeline,
            "run_id": ctx.run_id,
            "mode": ctx.mode,
            "config": config,
            "state": state,
            "window": ctx.window.as_ref().map(|w| json!({"start": w.start, "end": w.end})),
        })
    }

    /// Start the program and read its schema; a cancelled run kills it while it waits.
    async fn start(&self, ctx: &RunContext) -> Result<(Running, SchemaRef)> {
        let config = self.config.clone();
        let input = self.input(ctx);
        let mut running = tokio::task::spawn_blocking(move || Running::spawn(&config, &input))
            .await
            .map_err(|e| Error::internal(format!("starting the exec source: {e}")))??;
        let pid = running.pid();
        let mut guard = KillOnDrop(Some(pid));
        let mut reading = tokio::task::spawn_blocking(move || {
            let schema = running.read_schema();
            (running, schema)
        });
        tokio::select! {
            joined = &mut reading => {
                guard.disarm();
                let (running, schema) = joined
                    .map_err(|e| Error::internal(format!("starting the exec source: {e}")))?;
                Ok((running, schema?))
            }
            () = ctx.cancel.cancelled() => {
                drop(guard);
                let _ = reading.await;
                Err(Error::cancelled("the run was cancelled; the exec source was killed"))
            }
        }
    }
}

/// Kills the program's process group when dropped armed: a run whose read (or schema
/// read) future is dropped — the runtime stopping it — must not leave the program running.
struct KillOnDrop(Option<u32>);

impl KillOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_group(pid);
        }
    }
}

/// Read every batch into `out`, wait for the exit, and read the new state.
fn drain(mut running: Running, out: &BatchSender, incremental: bool) -> Result<SourceReport> {
    let mut report = SourceReport::default();
    let Some(reader) = running.reader.take() else {
        return Err(Error::internal("the exec source's stream was already read"));
    };
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                let status = running.kill();
                return Err(running.failure(format!(
                    "wrote a broken Arrow IPC stream ({e}){}",
                    exit_text(status)
                )));
            }
        };
        report.parts += 1;
        out.blocking_send(batch)?;
    }
    report.bytes_read = running.bytes.load(std::sync::atomic::Ordering::Relaxed);
    let status = running.wait()?;
    if !status.success() {
        return Err(running.failure(format!("failed{}", exit_text(Some(status)))));
    }
    if incremental {
        report.state = read_state(&mut running)?;
    }
    Ok(report)
}

/// The state the program wrote to `PIPE_STATE_OUT` (none written: the state stays).
fn read_state(running: &mut Running) -> Result<State> {
    let text = match std::fs::read_to_string(&running.state_out) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new()),
        Err(e) => return Err(Error::external(format!("reading PIPE_STATE_OUT: {e}"))),
    };
    let values: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| {
            running.failure(format!(
                "wrote a state that is not a JSON object to PIPE_STATE_OUT ({e})"
            ))
        })?;
    Ok(values
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (format!("{STATE_PREFIX}{k}"), v)
        })
        .collect())
}

#[async_trait]
impl Source for ExecSource {
    fn describe(&self) -> String {
        format!("exec `{}`", self.config.command.join(" "))
    }

    async fn schema(&self) -> Result<SchemaRef> {
        // `pipe check`: the program starts, says its schema, and is stopped.
        let (_running, schema) = self.start(&RunContext::new(self.pipeline.clone())).await?;
        Ok(schema)
    }

    async fn run_schema(&self, ctx: &RunContext) -> Result<SchemaRef> {
        let (running, schema) = self.start(ctx).await?;
        self.started.put(&ctx.run_id, running);
        Ok(schema)
    }

    fn is_incremental(&self) -> bool {
        self.config.incremental
    }

    fn supports_windows(&self) -> bool {
        self.config.windows
    }

    async fn read(&self, ctx: &RunContext, out: BatchSender) -> Result<SourceReport> {
        let (running, schema) = match self.started.take(&ctx.run_id) {
            Some(r) => {
                let schema = r.reader.as_ref().map(|r| r.schema());
                (r, schema)
            }
            None => {
                let (r, schema) = self.start(ctx).await?;
                (r, Some(schema))
            }
        };
        if schema.as_ref().map(|s| s.fields()) != Some(out.schema().fields()) {
            return Err(Error::user(format!(
                "the exec source `{}` wrote a different schema on this start than on the last",
                running.name
            )));
        }
        let pid = running.pid();
        let mut guard = KillOnDrop(Some(pid));
        let incremental = self.config.incremental;
        let mut task = tokio::task::spawn_blocking(move || drain(running, &out, incremental));
        let report = tokio::select! {
            joined = &mut task => {
                guard.disarm();
                joined.map_err(|e| Error::internal(format!("the exec source's reader: {e}")))??
            }
            () = ctx.cancel.cancelled() => {
                drop(guard);
                let _ = task.await;
                return Err(Error::cancelled("the run was cancelled; the exec source was killed"));
            }
        };
        info!(batches = report.parts, "exec source finished");
        Ok(report)
    }
}
