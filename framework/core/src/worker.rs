//! `pipe worker`: many processes, on any hosts, working through one pipeline's work units.
//!
//! The state store (PostgreSQL when the workers are on several hosts) is the coordinator:
//! `pipe backfill --workers` registers the windows as units, and each worker claims one at a
//! time ([`StateStore::claim_unit`]), runs it as an ordinary atomic run while renewing the
//! unit's lease, and records the outcome. The table format's own concurrency control is the
//! commit protocol: windows hold disjoint rows, so appends from many workers never conflict,
//! and a window is never committed twice (`committed::state_to_commit`). A worker that finds
//! nothing to claim waits while other workers' units are running (their worker may die and
//! its unit come back), then exits.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::destination::WriteMode;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Pipeline;
use crate::registry::Registry;
use crate::runner::Session;
use crate::state::{StateStore, Unit, UnitOutcome, WorkerId};
use crate::summary::{RunProgress, RunStatus};

/// Claims of one unit after which a transient failure (or an unknown commit outcome) fails
/// it instead of giving it back (each claim's run already retried `[runtime] retries` times).
const MAX_ATTEMPTS: i64 = 5;

/// Claims of one unit after which a failure that is not transient fails the unit: the first
/// failure gives it back to be tried by another worker (this worker's host may be the
/// problem — a missing credential, a full disk).
const FAIL_AFTER: i64 = 2;

/// Units failed in a row after which a worker stops (exit 1) instead of failing the rest of
/// the job: a worker that fails everything it touches is likely the problem itself.
const MAX_FAILURES_IN_A_ROW: usize = 3;

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Keep polling for new units after the job is done (a long-lived worker), until stopped.
    pub wait: bool,
    /// The pause between polls when nothing is claimable.
    pub poll: Duration,
    /// How long the state store may be unreachable before the worker gives up.
    pub store_patience: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            wait: false,
            poll: Duration::from_millis(500),
            store_patience: Duration::from_secs(300),
        }
    }
}

/// One unit's outcome, as this worker saw it.
#[derive(Debug, Clone, Serialize)]
pub struct UnitResult {
    /// `start..end`.
    pub window: String,
    /// `committed`, `already committed`, `failed`, `failed, given back` (for another worker's
    /// attempt), `released` (given back: stopping, or a transient failure) or `lost` (its
    /// lease expired and another worker took it).
    pub status: &'static str,
    /// Rows committed.
    pub rows: u64,
    /// The claim's number for this unit (1 = first).
    pub attempt: i64,
    /// Seconds from claim to record.
    pub seconds: f64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a worker did.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    /// The pipeline.
    pub pipeline: String,
    /// `host pid N`.
    pub worker: String,
    /// Units committed by this worker.
    pub committed: usize,
    /// Units found committed already.
    pub already_committed: usize,
    /// Units that failed.
    pub failed: usize,
    /// Rows committed by this worker.
    pub rows: u64,
    /// Seconds the worker ran.
    pub seconds: f64,
    /// Units of the job failed (by any worker) when this one stopped.
    pub job_failed: i64,
    /// Every unit this worker claimed, in order.
    pub units: Vec<UnitResult>,
}

/// Refuse what work units cannot do, before anything is registered or claimed: a pipeline
/// whose runs are not independent windows, or a table several processes cannot commit to.
pub fn check_splittable(pipeline: &Pipeline) -> Result<()> {
    if pipeline.write.mode == WriteMode::Replace {
        return Err(Error::user(format!(
            "pipeline `{}` writes in mode = \"replace\": every unit would replace the rows the \
             others committed, so it cannot be split into work units; use \"append\" or \
             \"merge\"",
            pipeline.name
        )));
    }
    if !pipeline.source.supports_windows() {
        return Err(Error::user(format!(
            "the source of pipeline `{}` ({}) cannot read a window of its cursor, so it cannot \
             be split into work units",
            pipeline.name, pipeline.source_type
        )));
    }
    pipeline.destination.many_writers()
}

/// Work through `file`'s units until none is left (or, with `wait`, until `cancel`); calls
/// `on_unit` as each unit ends.
pub async fn work(
    file: &Path,
    registry: &Registry,
    options: &WorkerOptions,
    cancel: CancellationToken,
    mut on_unit: impl FnMut(&UnitResult),
) -> Result<WorkerReport> {
    let started = Instant::now();
    let session = Session::open_shared(file, registry).await?;
    check_splittable(&session.load()?)?;
    let me = WorkerId::this_process();
    let name = session.name().to_string();
    let store = session.store().clone();
    let mut report = WorkerReport {
        pipeline: name.clone(),
        worker: format!("{} pid {}", me.host, me.pid),
        committed: 0,
        already_committed: 0,
        failed: 0,
        rows: 0,
        seconds: 0.0,
        job_failed: 0,
        units: Vec::new(),
    };
    info!(pipeline = %name, worker = %report.worker, "worker started");
    let mut failures_in_a_row = 0;
    while !cancel.is_cancelled() {
        let claimed = patiently(options, &cancel, "claiming a unit", || {
            store.claim_unit(&name, &me)
        })
        .await?;
        let Some(unit) = claimed else {
            let left = patiently(options, &cancel, "counting units", || {
                store.units_left(&name)
            })
            .await?;
            if left == 0 && !options.wait {
                break;
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(options.poll) => continue,
            }
        };
        let result = run_unit(&session, &store, &me, unit, options, &cancel).await?;
        match result.status {
            "committed" => report.committed += 1,
            "already committed" => report.already_committed += 1,
            "failed" => report.failed += 1,
            _ => {}
        }
        match result.status {
            "failed" | "failed, given back" => failures_in_a_row += 1,
            "released" | "lost" => {}
            _ => failures_in_a_row = 0,
        }
        let give_up = failures_in_a_row >= MAX_FAILURES_IN_A_ROW;
        report.rows += result.rows;
        on_unit(&result);
        let pause = matches!(result.status, "released" | "failed, given back");
        report.units.push(result);
        if give_up {
            let last = report.units.last().and_then(|u| u.error.clone());
            let _ = session.close().await;
            return Err(Error::external(format!(
                "worker {} stopped after {failures_in_a_row} units failed in a row (the last: \
                 {}); the units it gave back are left to other workers",
                report.worker,
                last.unwrap_or_default()
            )));
        }
        if pause {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(options.poll) => {}
            }
        }
    }
    report.job_failed = patiently(options, &cancel, "reading the units", || {
        store.units_status(&name)
    })
    .await?
    .map_or(0, |s| s.failed);
    report.seconds = started.elapsed().as_secs_f64();
    if let Err(e) = session.close().await {
        warn!(error = ?e, "closing the session");
    }
    info!(pipeline = %name, committed = report.committed, failed = report.failed, "worker done");
    Ok(report)
}

/// Run one claimed unit while renewing its lease, and record how it ended.
async fn run_unit(
    session: &Session,
    store: &StateStore,
    me: &WorkerId,
    unit: Unit,
    options: &WorkerOptions,
    cancel: &CancellationToken,
) -> Result<UnitResult> {
    let started = Instant::now();
    let name = session.name().to_string();
    let label = format!("{}..{}", unit.window.start, unit.window.end);
    info!(pipeline = %name, window = %label, attempt = unit.attempts, "unit claimed");
    // The lease runs from the claim: renew it from now on, checks included.
    let lost = CancellationToken::new();
    let run_cancel = cancel.child_token();
    let heartbeat = tokio::spawn(renew(
        store.clone(),
        name.clone(),
        unit.key.clone(),
        me.clone(),
        started,
        lost.clone(),
        run_cancel.clone(),
    ));
    // A unit can be claimed again after its commit: its worker died before recording it.
    let (outcome, status) = match committed_by(session, &unit).await {
        Some(run_id) => (UnitOutcome::Done { run_id, rows: 0 }, "already committed"),
        None => {
            let progress = Arc::new(RunProgress::default());
            let result = session
                .run(Some(unit.window.clone()), &run_cancel, progress)
                .await;
            settle(session, &unit, result, &lost).await
        }
    };
    heartbeat.abort();
    let rows = match &outcome {
        UnitOutcome::Done { rows, .. } => *rows,
        _ => 0,
    };
    let error = match &outcome {
        UnitOutcome::Failed { error, .. } => Some(error.clone()),
        UnitOutcome::Released { error } => error.clone(),
        UnitOutcome::Done { .. } => None,
    };
    if status != "lost" {
        patiently(options, cancel, "recording a unit", || {
            store.finish_unit(&name, &unit.key, me, &outcome)
        })
        .await?;
    }
    info!(pipeline = %name, window = %label, status, rows, "unit finished");
    Ok(UnitResult {
        window: label,
        status,
        rows,
        attempt: unit.attempts,
        seconds: started.elapsed().as_secs_f64(),
        error,
    })
}

/// What a finished run means for its unit.
async fn settle(
    session: &Session,
    unit: &Unit,
    result: Result<crate::runtime::RunResult>,
    lost: &CancellationToken,
) -> (UnitOutcome, &'static str) {
    let failure = match result {
        Ok(r) if r.summary.status == RunStatus::Succeeded => {
            let outcome = UnitOutcome::Done {
                run_id: r.summary.run_id,
                rows: r.summary.rows_written,
            };
            return (outcome, "committed");
        }
        Ok(r) => (r.summary.status, r.error, Some(r.summary.run_id)),
        Err(e) => (RunStatus::Failed, Some(e), None),
    };
    let (status, error, run_id) = failure;
    // A run refused because another worker committed the window meanwhile is done.
    if let Some(by) = committed_by(session, unit).await {
        return (
            UnitOutcome::Done {
                run_id: by,
                rows: 0,
            },
            "already committed",
        );
    }
    if lost.is_cancelled() {
        return (UnitOutcome::Released { error: None }, "lost");
    }
    let transient = error
        .as_ref()
        .is_some_and(|e| e.kind() == ErrorKind::External && e.is_retryable());
    let message = error.map_or_else(|| "failed".into(), |e| e.chain().join(": "));
    let again = |error: Option<String>| (UnitOutcome::Released { error }, "released");
    match status {
        // Stopped: the worker is shutting down; the next claimer checks the destination.
        RunStatus::Cancelled => again(None),
        // The commit's outcome is unknown, or the failure may pass: another attempt, up to
        // MAX_ATTEMPTS claims (the next claimer checks the destination first).
        RunStatus::Unknown if unit.attempts < MAX_ATTEMPTS => again(Some(message)),
        _ if transient && unit.attempts < MAX_ATTEMPTS => again(Some(message)),
        // A failure that is not transient gets one more attempt, by whichever worker claims
        // the unit next: this worker's host may be what failed.
        RunStatus::Failed if !transient && unit.attempts < FAIL_AFTER => (
            UnitOutcome::Released {
                error: Some(message),
            },
            "failed, given back",
        ),
        _ => (
            UnitOutcome::Failed {
                run_id,
                error: message,
            },
            "failed",
        ),
    }
}

/// The run that committed `unit`'s window, if the destination (or the store, for a
/// destination without state) holds it.
async fn committed_by(session: &Session, unit: &Unit) -> Option<String> {
    match session.committed_state().await {
        Ok(state) => state.get(&unit.key).cloned(),
        Err(e) => {
            warn!(error = ?e, "reading the committed state");
            None
        }
    }
}

/// Renew the unit's lease every third of its life; cancel the run when the unit is lost
/// (another worker has it) or when the store stayed unreachable past the lease.
async fn renew(
    store: StateStore,
    pipeline: String,
    unit: String,
    me: WorkerId,
    claimed: Instant,
    lost: CancellationToken,
    run: CancellationToken,
) {
    let lease = Duration::from_secs(store.lease_secs());
    let mut renewed = claimed;
    loop {
        tokio::time::sleep(lease / 3).await;
        match store.renew_unit(&pipeline, &unit, &me).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                warn!(%pipeline, %unit, "the unit's lease was lost to another worker; stopping its run");
                break;
            }
            Err(e) if renewed.elapsed() < lease => {
                warn!(%pipeline, %unit, error = ?e, "renewing the unit's lease");
            }
            Err(e) => {
                warn!(%pipeline, %unit, error = ?e, "the unit's lease expired unrenewed; stopping its run");
                break;
            }
        }
    }
    lost.cancel();
    run.cancel();
}

/// Call the store until it answers, waiting out an outage (a restarting coordinator) with
/// exponential backoff for up to `store_patience`; an error that is not transient, or an
/// outage longer than that, is returned.
async fn patiently<T, F, Fut>(
    options: &WorkerOptions,
    cancel: &CancellationToken,
    what: &str,
    mut call: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let since = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        // A stopping worker still records what it did, but waits for the store less.
        let patience = match cancel.is_cancelled() {
            true => options.store_patience.min(Duration::from_secs(30)),
            false => options.store_patience,
        };
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && since.elapsed() < patience => {
                warn!(error = ?e, ?delay, "state store unavailable while {what}; waiting");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.context(format!("{what} (state store)"))),
        }
    }
}

/// Register `planned` windows of `file`'s pipeline as work units in its state store; the
/// pipeline's name, its store, and what registering did.
pub async fn register(
    file: &Path,
    registry: &Registry,
    planned: &[crate::context::Window],
) -> Result<(String, StateStore, crate::state::Registered)> {
    let pipeline = Pipeline::load(file, registry)?;
    check_splittable(&pipeline)?;
    let store = StateStore::open(&pipeline.state).await?;
    let committed = crate::runner::committed_state(&pipeline, &store).await?;
    let registered = store
        .register_units(&pipeline.name, planned, &committed)
        .await?;
    Ok((pipeline.name.clone(), store, registered))
}
