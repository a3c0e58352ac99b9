//! The runtime: extract → metadata → stages → load as concurrent tasks over bounded channels,
//! then one commit — or nothing at all.
//!
//! Protocol: the source's schema is read and the destination prepared (the metadata stage's
//! DDL, inside the destination's uncommitted transaction/staging) before any data moves. Then
//! every stage runs as a task; each channel ends with an explicit end marker sent only when
//! its producer returned `Ok`. The first failure (or `ctx.cancel`, e.g. Ctrl-C) cancels every
//! task and aborts the sink. The sink commits only when every task succeeded.

use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::channel::{BatchReceiver, BatchSender, batch_channel};
use crate::context::{RunContext, State};
use crate::destination::{CommitReport, CommitRequest, PrepareRequest, Sink, WriteMode};
use crate::error::{Error, ErrorKind, Result};
use crate::evolution::Aligner;
use crate::pipeline::Pipeline;
use crate::quarantine::{Quarantine, Spool};
use crate::source::SourceReport;
use crate::stage::{Stage, StageReport};
use crate::summary::{ErrorSummary, RunProgress, RunStatus, RunSummary};

mod register;

/// The state key naming the run that committed last.
pub const LAST_RUN_KEY: &str = "pipe.last_run";

/// The result of [`run`]: the summary, and the error if the run failed.
#[derive(Debug)]
pub struct RunResult {
    /// What happened, including counts up to a failure.
    pub summary: RunSummary,
    /// Why it failed (`None` on success).
    pub error: Option<Error>,
    /// The state changes committed with the data (empty unless it succeeded).
    pub committed: State,
}

enum TaskOutput {
    Source(SourceReport),
    Stage(StageReport, Option<Quarantine>),
    Pass,
    Load(Box<dyn Sink>),
}

#[derive(Default)]
struct Collected {
    source: SourceReport,
    stages: Vec<StageReport>,
    quarantine: Option<Quarantine>,
    commit: Option<CommitReport>,
    state: State,
}

/// Run `pipeline` once. Commits everything or nothing.
pub async fn run(pipeline: Pipeline, mut ctx: RunContext, progress: Arc<RunProgress>) -> RunResult {
    ctx.mode = pipeline.write.mode;
    let clock = Instant::now();
    let destination = pipeline.destination.describe();
    let mode = pipeline.write.mode.to_string();
    info!(pipeline = %ctx.pipeline, run_id = %ctx.run_id, %destination, %mode, "run started");
    let mut collected = Collected::default();
    let outcome = run_stages(pipeline, &ctx, &progress, &mut collected).await;
    let seconds = clock.elapsed().as_secs_f64();
    let rows_read = progress.rows_read();
    let (status, error) = match outcome {
        Ok(()) => (RunStatus::Succeeded, None),
        Err(e) if e.is_commit_unknown() => (RunStatus::Unknown, Some(e)),
        Err(e) if e.kind() == ErrorKind::Cancelled => (RunStatus::Cancelled, Some(e)),
        Err(e) => (RunStatus::Failed, Some(e)),
    };
    let commit = collected.commit.take();
    let summary = RunSummary {
        pipeline: ctx.pipeline.clone(),
        run_id: ctx.run_id.clone(),
        status,
        destination,
        mode,
        started_at: ctx.started_at.to_rfc3339(),
        seconds,
        rows_read,
        rows_written: commit
            .as_ref()
            .map_or(0, |c| c.rows_inserted + c.rows_updated + c.rows_unchanged),
        rows_rejected: collected.stages.iter().map(|s| s.rows_rejected).sum(),
        rows_quarantined: collected.stages.iter().map(|s| s.rows_quarantined).sum(),
        bytes_read: collected.source.bytes_read,
        rows_per_second: if seconds > 0.0 {
            rows_read as f64 / seconds
        } else {
            0.0
        },
        commit,
        stages: collected.stages,
        error: error.as_ref().map(ErrorSummary::from),
        warnings: std::mem::take(&mut collected.source.warnings),
    };
    match &error {
        None => info!(
            pipeline = %summary.pipeline, run_id = %summary.run_id, rows = summary.rows_read,
            seconds = summary.seconds, "run committed"
        ),
        Some(e) if summary.status == RunStatus::Unknown => warn!(
            pipeline = %summary.pipeline, run_id = %summary.run_id, error = ?e,
            "the commit's outcome is unknown; its files were kept"
        ),
        Some(e) => warn!(
            pipeline = %summary.pipeline, run_id = %summary.run_id, error = ?e,
            "run failed; nothing committed"
        ),
    }
    RunResult {
        summary,
        error,
        committed: collected.state,
    }
}

async fn run_stages(
    pipeline: Pipeline,
    ctx: &RunContext,
    progress: &Arc<RunProgress>,
    collected: &mut Collected,
) -> Result<()> {
    let runtime = pipeline.runtime.clone();
    let write = pipeline.write.clone();
    let destination = pipeline.destination.clone();
    let Some(opened) = open(pipeline, ctx).await? else {
        info!(
            stage = "extract",
            "the source has no columns (it found no records): nothing to commit"
        );
        collected.commit = Some(CommitReport::nothing());
        return Ok(());
    };
    let ctx = &opened.ctx;
    let sink = if write.mode == WriteMode::Register {
        register::register(
            opened.parts,
            ctx,
            progress,
            runtime.channel_capacity,
            collected,
        )
        .await?
    } else {
        stream(
            opened.parts,
            ctx,
            progress,
            runtime.channel_capacity,
            collected,
        )
        .await?
    };
    // The commit is the point of no return: an interrupt that arrives before it aborts the
    // run; one that arrives during it lets the (atomic) commit finish.
    if ctx.cancel.is_cancelled() {
        abort(sink).await;
        return Err(Error::cancelled("the run was cancelled before its commit"));
    }
    // What this run changes in the committed state: the source's new position, or for a
    // backfill window only the record that the window is done.
    let mut state = match &ctx.window {
        Some(window) => State::from([(window.state_key(), ctx.run_id.clone())]),
        None => changed(&collected.source.state, &ctx.committed),
    };
    let quarantined = collected.quarantine.as_ref().map_or(0, |q| q.rows);
    let rows = progress.rows_written();
    if rows == 0 && quarantined == 0 {
        if write.mode == WriteMode::Replace && !write.allow_empty {
            abort(sink).await;
            return Err(Error::user(format!(
                "the run has no rows: mode = \"replace\" would leave {} empty, so nothing was \
                 committed; if an empty table is what you want, set `allow_empty = true` in \
                 [destination]",
                destination.describe()
            )));
        }
        if write.mode != WriteMode::Replace && state.is_empty() {
            // Nothing to add and no state to move: no empty version or snapshot. The run is
            // still recorded (by the runner's ledger).
            abort(sink).await;
            info!(
                stage = "load",
                "no rows and no state change: nothing to commit"
            );
            collected.commit = Some(CommitReport::nothing());
            return Ok(());
        }
    }
    // Which run committed last, committed with it: lets the runner reconcile its ledger
    // after a crash between the destination's commit and the ledger update.
    state.insert(LAST_RUN_KEY.to_string(), ctx.run_id.clone());
    let request = CommitRequest {
        ctx: ctx.clone(),
        rows_read: progress.rows_read(),
        state: state.clone(),
        quarantine: collected.quarantine.take(),
    };
    let report = sink
        .commit(request)
        .await
        .map_err(|e| e.context(format!("committing to {}", destination.describe())))?;
    for warning in &report.warnings {
        warn!(stage = "load", %warning, "committed with a warning");
    }
    info!(stage = "load", inserted = report.rows_inserted, updated = report.rows_updated,
          commit_id = ?report.commit_id, "committed");
    collected.commit = Some(report);
    collected.state = state;
    Ok(())
}

/// The keys of `reported` whose value differs from the committed one.
fn changed(reported: &State, committed: &State) -> State {
    reported
        .iter()
        .filter(|(k, v)| committed.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A run after its metadata stage: the prepared sink and everything the data path needs.
struct Opened {
    /// The run's context, with the committed state read from the destination.
    ctx: RunContext,
    parts: Parts,
}

/// The components [`stream`] connects.
struct Parts {
    source: Arc<dyn crate::source::Source>,
    source_schema: arrow_schema::SchemaRef,
    stages: Vec<Box<dyn Stage>>,
    aligner: Aligner,
    sink: Box<dyn Sink>,
}

/// Read the committed state, open the source, prepare the destination (the metadata stage)
/// and bind the stages to the table's schema. Nothing moves yet. `None`: the source has no
/// columns (an API that returned no records to infer them from): nothing to load, and no
/// table is created or changed.
async fn open(pipeline: Pipeline, ctx: &RunContext) -> Result<Option<Opened>> {
    let Pipeline {
        source,
        mut stages,
        destination,
        write,
        metadata,
        ..
    } = pipeline;
    check_modes(source.as_ref(), &write, ctx)?;
    // The committed state (cursor positions) comes from the destination, where it was
    // committed atomically with the data: it can never disagree with what was loaded.
    let mut ctx = ctx.clone();
    // A destination that cannot store state keeps the one the caller put in the context
    // (the runner's state store; see `runner.rs`).
    if let Some(state) = cancellable(&ctx, destination.committed_state(&ctx)).await? {
        ctx.committed = Arc::new(state);
    }
    let source_schema = cancellable(&ctx, source.run_schema(&ctx))
        .await
        .map_err(|e| e.context(format!("opening {}", source.describe())))?;
    info!(
        stage = "extract",
        columns = source_schema.fields().len(),
        "source opened"
    );
    if source_schema.fields().is_empty() {
        if write.mode == WriteMode::Replace {
            return Err(Error::user(format!(
                "{} has no columns (it found no records): mode = \"replace\" would empty the \
                 table, so nothing was committed",
                source.describe()
            )));
        }
        return Ok(None);
    }
    let request = PrepareRequest {
        ctx: ctx.clone(),
        source_schema: source_schema.clone(),
        write,
        evolution: metadata.schema_evolution,
    };
    let sink = cancellable(&ctx, destination.prepare(request))
        .await
        .map_err(|e| {
            e.context(format!(
                "preparing {} for the columns of {}",
                destination.describe(),
                source.describe()
            ))
        })?;
    let target = sink.schema();
    info!(
        stage = "metadata",
        columns = target.fields().len(),
        "destination prepared"
    );
    let prepared = Aligner::new(&source_schema, target.clone())
        .map_err(|e| e.context(format!("matching the columns of {}", source.describe())))
        .and_then(|aligner| {
            for stage in &mut stages {
                stage
                    .bind(&target, &ctx)
                    .map_err(|e| e.context(format!("setting up the {} stage", stage.name())))?;
            }
            check_quarantine(&stages, destination.as_ref())?;
            Ok(aligner)
        });
    match prepared {
        Ok(aligner) => Ok(Some(Opened {
            ctx,
            parts: Parts {
                source,
                source_schema,
                stages,
                aligner,
                sink,
            },
        })),
        Err(e) => {
            abort(sink).await;
            Err(e)
        }
    }
}

/// Run every stage as a task over bounded channels until the data is staged in the sink;
/// the first failure cancels the others and aborts the sink.
async fn stream(
    parts: Parts,
    ctx: &RunContext,
    progress: &Arc<RunProgress>,
    capacity: usize,
    collected: &mut Collected,
) -> Result<Box<dyn Sink>> {
    let Parts {
        source,
        source_schema,
        stages,
        aligner,
        sink,
    } = parts;
    let target = sink.schema();
    let mut tasks: JoinSet<Result<TaskOutput>> = JoinSet::new();
    let (source_tx, source_rx) = batch_channel(source_schema, capacity);
    {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let report = cancellable(&ctx, source.read(&ctx, source_tx.clone())).await?;
            source_tx.finish().await?;
            info!(
                stage = "extract",
                bytes = report.bytes_read,
                "source finished"
            );
            Ok(TaskOutput::Source(report))
        });
    }
    let (meta_tx, mut rx) = batch_channel(target.clone(), capacity);
    tasks.spawn(metadata_task(
        ctx.clone(),
        aligner,
        source_rx,
        meta_tx,
        progress.clone(),
    ));
    for stage in stages {
        let (tx, next_rx) = batch_channel(target.clone(), capacity);
        tasks.spawn(stage_task(ctx.clone(), stage, rx, tx));
        rx = next_rx;
    }
    tasks.spawn(load_task(ctx.clone(), sink, rx, progress.clone()));

    let mut sink: Option<Box<dyn Sink>> = None;
    let mut errors: Vec<Error> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(TaskOutput::Source(report))) => {
                for warning in &report.warnings {
                    warn!(stage = "extract", %warning, "source warning");
                }
                collected.source = report;
            }
            Ok(Ok(TaskOutput::Stage(report, quarantine))) => {
                collected.stages.push(report);
                if quarantine.is_some() {
                    collected.quarantine = quarantine;
                }
            }
            Ok(Ok(TaskOutput::Pass)) => {}
            Ok(Ok(TaskOutput::Load(s))) => sink = Some(s),
            Ok(Err(e)) => {
                ctx.cancel.cancel();
                errors.push(e);
            }
            Err(join) => {
                ctx.cancel.cancel();
                errors.push(Error::internal(format!("a stage task panicked: {join}")));
            }
        }
    }
    if let Some(error) = first_cause(errors, ctx) {
        if let Some(s) = sink {
            abort(s).await;
        }
        return Err(error);
    }
    sink.ok_or_else(|| Error::internal("the load stage ended without its sink"))
}

/// Refuse combinations that would lose or duplicate rows before anything runs.
fn check_modes(
    source: &dyn crate::source::Source,
    write: &crate::destination::WriteSpec,
    ctx: &RunContext,
) -> Result<()> {
    if ctx.window.is_some() && !source.supports_windows() {
        return Err(Error::user(
            "this source cannot read a window of its cursor, so it cannot be backfilled",
        ));
    }
    if write.mode == WriteMode::Replace && ctx.window.is_some() {
        return Err(Error::user(
            "a backfill in mode = \"replace\" would replace the table with each window in turn; \
             use \"append\" or \"merge\"",
        ));
    }
    if source.is_incremental() && write.mode == WriteMode::Replace {
        return Err(Error::user(
            "an incremental source (with a `cursor`) and mode = \"replace\" would replace the \
             table with only the new rows on every run; use \"append\" or \"merge\"",
        ));
    }
    if write.mode == WriteMode::Register && (ctx.window.is_some() || source.is_incremental()) {
        return Err(Error::user(
            "mode = \"register\" adds every file the source lists that the table does not \
             reference yet; it takes no `cursor` and no backfill window",
        ));
    }
    if source.rereads_rows() && write.mode != WriteMode::Merge {
        return Err(Error::user(
            "`lookback` re-reads rows that were already loaded, which only mode = \"merge\" \
             deduplicates",
        ));
    }
    Ok(())
}

/// At most one stage quarantines, and only into a destination that commits quarantined rows
/// atomically with the data (checked after the stages are bound; `pipe validate` too).
pub fn check_quarantine(
    stages: &[Box<dyn Stage>],
    destination: &dyn crate::destination::Destination,
) -> Result<()> {
    let quarantining: Vec<&str> = stages
        .iter()
        .filter(|s| s.quarantine().is_some())
        .map(|s| s.name())
        .collect();
    if quarantining.len() > 1 {
        return Err(Error::user(format!(
            "only one stage may quarantine rows; these do: {}",
            quarantining.join(", ")
        )));
    }
    match stages.iter().find_map(|s| s.quarantine()) {
        Some(spec) => destination.check_quarantine(&spec),
        None => Ok(()),
    }
}

/// The error to report: the first one that is not a consequence of cancellation.
fn first_cause(errors: Vec<Error>, ctx: &RunContext) -> Option<Error> {
    let mut cancelled = None;
    for e in errors {
        if e.kind() != ErrorKind::Cancelled {
            return Some(e);
        }
        cancelled.get_or_insert(e);
    }
    cancelled.or_else(|| {
        ctx.cancel
            .is_cancelled()
            .then(|| Error::cancelled("the run was cancelled"))
    })
}

async fn abort(sink: Box<dyn Sink>) {
    if let Err(e) = sink.abort().await {
        warn!(error = ?e, "aborting the destination's staged writes failed");
    }
}

/// Await `fut` unless the run is cancelled first.
async fn cancellable<T>(
    ctx: &RunContext,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => Err(Error::cancelled("the run was cancelled")),
        r = fut => r,
    }
}

async fn metadata_task(
    ctx: RunContext,
    aligner: Aligner,
    mut rx: BatchReceiver,
    tx: BatchSender,
    progress: Arc<RunProgress>,
) -> Result<TaskOutput> {
    while let Some(batch) = cancellable(&ctx, rx.recv()).await? {
        progress.add_read(batch.num_rows());
        let aligned = aligner.align(batch)?;
        cancellable(&ctx, tx.send(aligned)).await?;
    }
    tx.finish().await?;
    Ok(TaskOutput::Pass)
}

async fn stage_task(
    ctx: RunContext,
    mut stage: Box<dyn Stage>,
    mut rx: BatchReceiver,
    tx: BatchSender,
) -> Result<TaskOutput> {
    let name = stage.name().to_string();
    let result: Result<(StageReport, Option<Quarantine>)> = async {
        let mut spool = stage.quarantine().map(Spool::new).transpose()?;
        while let Some(batch) = cancellable(&ctx, rx.recv()).await? {
            let out = stage.process(batch).await?;
            if let Some(q) = out.quarantine {
                let Some(mut s) = spool.take() else {
                    return Err(Error::internal(
                        "a stage quarantined rows without declaring a quarantine",
                    ));
                };
                // File I/O: off the async workers.
                spool = Some(blocking(move || s.write(&q).map(|()| s)).await?);
            }
            if let Some(pass) = out.pass {
                cancellable(&ctx, tx.send(pass)).await?;
            }
        }
        let report = stage.finish().await?;
        let quarantine = match spool {
            Some(s) => blocking(move || s.finish()).await?,
            None => None,
        };
        Ok((report, quarantine))
    }
    .await;
    let (mut report, quarantine) = result.map_err(|e| e.context(format!("{name} stage")))?;
    tx.finish().await?;
    report.stage = name;
    info!(stage = %report.stage, rows_in = report.rows_in, rejected = report.rows_rejected,
          quarantined = report.rows_quarantined, "stage finished");
    Ok(TaskOutput::Stage(report, quarantine))
}

/// Run blocking `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a blocking task failed: {e}")))?
}

async fn load_task(
    ctx: RunContext,
    mut sink: Box<dyn Sink>,
    mut rx: BatchReceiver,
    progress: Arc<RunProgress>,
) -> Result<TaskOutput> {
    let written: Result<()> = async {
        while let Some(batch) = cancellable(&ctx, rx.recv()).await? {
            let rows = batch.num_rows();
            sink.write(batch).await?;
            progress.add_written(rows);
        }
        Ok(())
    }
    .await;
    match written {
        Ok(()) => Ok(TaskOutput::Load(sink)),
        Err(e) => {
            abort(sink).await;
            Err(e)
        }
    }
}
