//! `pipe backfill` and `pipe status`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use pipe_framework::backfill::windows;
use pipe_framework::runner::Session;
use pipe_framework::{Error, Registry, RunProgress, RunStatus, Window};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::output;

/// `--from`, `--to`, `--step`.
#[derive(Debug)]
pub(crate) struct Range {
    pub from: String,
    pub to: String,
    pub step: String,
}

/// One window's outcome.
#[derive(Debug, Serialize)]
struct WindowResult {
    window: String,
    status: String,
    rows: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The backfill's outcome.
#[derive(Debug, Serialize)]
struct BackfillReport {
    pipeline: String,
    windows: usize,
    already_done: usize,
    committed: usize,
    failed: usize,
    rows: u64,
    results: Vec<WindowResult>,
}

pub(crate) async fn backfill(
    file: &Path,
    registry: &Registry,
    range: &Range,
    parallel: usize,
    json: bool,
    cancel: CancellationToken,
) -> Result<ExitCode, Error> {
    let planned = windows(&range.from, &range.to, &range.step)?;
    let session = Arc::new(Session::open(file, registry).await?);
    let done = session.committed_state().await?;
    let pending: Vec<Window> = pipe_framework::backfill::pending(&planned, done.keys())?;
    let mut report = BackfillReport {
        pipeline: session.name().to_string(),
        windows: planned.len(),
        already_done: planned.len() - pending.len(),
        committed: 0,
        failed: 0,
        rows: 0,
        results: Vec::new(),
    };
    // The first window runs alone, so the table's creation (DDL) happens once; the rest run
    // up to `parallel` at a time.
    let mut pending = pending.into_iter();
    if let Some(first) = pending.next() {
        let r = run_window(&session, first, &cancel).await;
        tally(&mut report, r, json);
    }
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks: JoinSet<WindowResult> = JoinSet::new();
    for window in pending {
        let (session, slots, cancel) = (session.clone(), slots.clone(), cancel.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            run_window(&session, window, &cancel).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let r = done.map_err(|e| Error::internal(format!("a backfill task failed: {e}")))?;
        tally(&mut report, r, json);
    }
    report.results.sort_by(|a, b| a.window.cmp(&b.window));
    if let Ok(session) = Arc::try_unwrap(session)
        && let Err(e) = session.close().await
    {
        tracing::warn!(error = ?e, "releasing the lease");
    }
    if json {
        output::print_json(&report);
    } else {
        output::print_backfill(
            report.windows,
            report.already_done,
            report.committed,
            report.failed,
            report.rows,
        );
    }
    Ok(if cancel.is_cancelled() {
        ExitCode::from(130)
    } else if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Adds one window's outcome to the report (and prints it unless `--json`).
fn tally(report: &mut BackfillReport, r: WindowResult, json: bool) {
    match r.status.as_str() {
        "committed" => report.committed += 1,
        _ => report.failed += 1,
    }
    report.rows += r.rows;
    if !json {
        output::print_window(&r.window, &r.status, r.rows, r.error.as_deref());
    }
    report.results.push(r);
}

/// Runs one window unless the backfill was cancelled first.
async fn run_window(session: &Session, window: Window, cancel: &CancellationToken) -> WindowResult {
    let label = format!("{}..{}", window.start, window.end);
    if cancel.is_cancelled() {
        return WindowResult {
            window: label,
            status: "cancelled".into(),
            rows: 0,
            error: None,
        };
    }
    let progress = Arc::new(RunProgress::default());
    match session.run(Some(window), cancel, progress).await {
        Ok(r) => WindowResult {
            window: label,
            status: match r.summary.status {
                RunStatus::Succeeded => "committed",
                RunStatus::Failed => "failed",
                RunStatus::Cancelled => "cancelled",
                RunStatus::Unknown => "unknown",
            }
            .into(),
            rows: r.summary.rows_written,
            error: r.error.map(|e| e.chain().join(": ")),
        },
        Err(e) => WindowResult {
            window: label,
            status: "failed".into(),
            rows: 0,
            error: Some(e.chain().join(": ")),
        },
    }
}

/// What `pipe status` shows.
#[derive(Debug, Serialize)]
struct Status {
    pipeline: String,
    state_store: String,
    /// Committed state (cursor positions), from the destination where it keeps it.
    state: std::collections::BTreeMap<String, String>,
    /// Where `state` was read.
    state_from: String,
    backfill_windows_done: usize,
    /// Work units (`pipe backfill --workers`), if the pipeline has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    units: Option<pipe_framework::state::UnitsStatus>,
    runs: Vec<pipe_framework::state::LedgerEntry>,
}

pub(crate) async fn status(
    file: &Path,
    registry: &Registry,
    runs: i64,
    json: bool,
) -> Result<ExitCode, Error> {
    let pipeline = pipe_framework::Pipeline::load(file, registry)?;
    let store = pipe_framework::state::StateStore::open(&pipeline.state).await?;
    let ctx = pipe_framework::RunContext::new(pipeline.name.clone());
    // The destination is the truth; if it cannot be read now (a running pipe holds a DuckDB
    // file, say), the store's mirror of it is shown instead.
    let (state, state_from) = match pipeline.destination.committed_state(&ctx).await {
        Ok(Some(s)) => (s, "destination".to_string()),
        Ok(None) => (
            store.state(&pipeline.name).await?,
            "state store".to_string(),
        ),
        Err(e) => (
            store.state(&pipeline.name).await?,
            format!(
                "state store (the destination could not be read: {})",
                e.chain().join(": ")
            ),
        ),
    };
    let windows = state.keys().filter(|k| k.starts_with("backfill.")).count();
    let status = Status {
        pipeline: pipeline.name.clone(),
        state_store: store.location().to_string(),
        state: state
            .into_iter()
            .filter(|(k, _)| !k.starts_with("backfill."))
            .collect(),
        state_from,
        backfill_windows_done: windows,
        units: store.units_status(&pipeline.name).await?,
        runs: store.runs(&pipeline.name, runs).await?,
    };
    if json {
        output::print_json(&status);
    } else {
        output::print_status_source(&status.state_from);
        output::print_status(
            &status.pipeline,
            &status.state_store,
            &status.state,
            status.backfill_windows_done,
            &status.runs,
        );
        if let Some(units) = &status.units {
            crate::workers::print_units(units);
        }
    }
    Ok(ExitCode::SUCCESS)
}
