//! `pipe schedule`: every scheduled pipeline of a directory in one long-running process.
//!
//! Each pipeline fires on its cron schedule (UTC, with seconds). A pipeline never overlaps
//! with itself: a fire time that comes while its previous run is still going is missed —
//! dropped (`missed = "skip"`) or caught up once as soon as the run ends (`"run_once"`).
//! Every run takes the pipeline's lease, so schedulers on several hosts and manual `pipe run`s
//! stay out of each other's way. On shutdown no new run starts; running ones get `grace` to
//! finish, then are cancelled (which commits nothing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::pipeline::{MissedRuns, Pipeline};
use crate::registry::Registry;
use crate::runner::Session;
use crate::summary::RunProgress;

/// One scheduled pipeline.
#[derive(Debug)]
struct Entry {
    file: PathBuf,
    name: String,
    schedule: cron::Schedule,
    missed: MissedRuns,
    next: DateTime<Utc>,
    running: bool,
    catch_up: bool,
}

/// The scheduled pipelines (`*.toml` with a `[schedule]`) in `dir`, or an error naming the
/// first file that does not load.
pub fn scheduled_pipelines(dir: &Path, registry: &Registry) -> Result<Vec<(PathBuf, String)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::from(e).context(format!("reading {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let p = Pipeline::load(&file, registry)?;
        if let Some(s) = p.schedule {
            out.push((file, s.cron));
        }
    }
    Ok(out)
}

fn entries(dir: &Path, registry: &Registry) -> Result<Vec<Entry>> {
    let now = Utc::now();
    let mut out = Vec::new();
    for (file, _) in scheduled_pipelines(dir, registry)? {
        let p = Pipeline::load(&file, registry)?;
        let Some(s) = p.schedule else { continue };
        let schedule = cron::Schedule::from_str(&s.cron)
            .map_err(|e| Error::user(format!("{}: schedule.cron: {e}", file.display())))?;
        let next = schedule.after(&now).next().ok_or_else(|| {
            Error::user(format!("{}: the cron schedule never fires", file.display()))
        })?;
        out.push(Entry {
            file,
            name: p.name,
            schedule,
            missed: s.missed,
            next,
            running: false,
            catch_up: false,
        });
    }
    if out.is_empty() {
        return Err(Error::user(format!(
            "no pipeline in {} has a [schedule] section",
            dir.display()
        )));
    }
    Ok(out)
}

/// Run the scheduled pipelines of `dir` until `shutdown` fires; then let running runs finish
/// for up to `grace`, cancel the rest, and return.
pub async fn run(
    dir: &Path,
    registry: &Registry,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<()> {
    let mut entries = entries(dir, registry)?;
    for e in &entries {
        info!(pipeline = %e.name, next = %e.next, "scheduled");
    }
    let stop_runs = CancellationToken::new();
    let mut running: JoinSet<()> = JoinSet::new();
    // Which entry each task runs, so a task that panics still frees its entry.
    let mut tasks: HashMap<tokio::task::Id, usize> = HashMap::new();
    loop {
        let now = Utc::now();
        for (i, e) in entries.iter_mut().enumerate() {
            let due = e.next <= now;
            if due {
                e.next = e
                    .schedule
                    .after(&now)
                    .next()
                    .unwrap_or(e.next + chrono::Days::new(36500));
            }
            let start = (due || e.catch_up) && !e.running;
            if due && e.running {
                warn!(pipeline = %e.name, "fire time missed: the previous run is still going");
                e.catch_up = e.missed == MissedRuns::RunOnce;
            }
            if start {
                e.running = true;
                e.catch_up = false;
                let task = running.spawn(run_one(
                    e.file.clone(),
                    registry.clone(),
                    stop_runs.child_token(),
                ));
                tasks.insert(task.id(), i);
            }
        }
        let next = entries.iter().map(|e| e.next).min().unwrap_or(now);
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        warn!(error = %e, "a scheduled run's task ended abnormally");
                        e.id()
                    }
                };
                if let Some(i) = tasks.remove(&id) {
                    entries[i].running = false;
                }
            }
        }
    }
    info!(
        running = running.len(),
        grace_secs = grace.as_secs(),
        "shutting down"
    );
    let drained = tokio::time::timeout(grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("grace period over: cancelling the running runs (nothing of theirs is committed)");
        stop_runs.cancel();
        let stopped = tokio::time::timeout(CANCEL_WAIT, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if stopped.is_err() {
            warn!("runs did not stop after cancellation: aborting them");
            running.abort_all();
            while running.join_next().await.is_some() {}
        }
    }
    Ok(())
}

/// How long cancelled runs get to wind down before their tasks are aborted.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// One scheduled run: take the lease (skip if another runner has it), run, release.
async fn run_one(file: PathBuf, registry: Registry, cancel: CancellationToken) {
    let session = match Session::open(&file, &registry).await {
        Ok(s) => s,
        Err(e) => {
            warn!(file = %file.display(), error = ?e, "not starting this run");
            return;
        }
    };
    match session
        .run(None, &cancel, Arc::new(RunProgress::default()))
        .await
    {
        Ok(r) => match &r.error {
            None => {
                info!(pipeline = %session.name(), rows = r.summary.rows_read, "scheduled run committed")
            }
            Some(e) => {
                warn!(pipeline = %session.name(), error = ?e, "scheduled run failed; nothing committed")
            }
        },
        Err(e) => {
            warn!(pipeline = %session.name(), error = ?e, "scheduled run could not be recorded")
        }
    }
    if let Err(e) = session.close().await {
        warn!(error = ?e, "releasing the lease");
    }
}
