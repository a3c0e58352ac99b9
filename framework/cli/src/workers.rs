//! `pipe worker` and `pipe backfill --workers`: a backfill's windows as work units in the
//! state store, run by any number of worker processes on any hosts (docs/scale-out.md).

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use pipe_framework::backfill::windows;
use pipe_framework::state::{StateStore, UnitsStatus};
use pipe_framework::worker::{self, WorkerOptions};
use pipe_framework::{Error, Registry};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::ops::Range;
use crate::output::group;

/// `pipe backfill --workers N`'s outcome.
#[derive(Debug, Serialize)]
struct JobReport {
    pipeline: String,
    state_store: String,
    registered: pipe_framework::state::Registered,
    /// Local worker processes started (0: the units wait for `pipe worker`s elsewhere).
    workers_started: usize,
    /// The units when the local workers finished (or when registered, with none started).
    #[serde(skip_serializing_if = "Option::is_none")]
    units: Option<UnitsStatus>,
}

/// Register the range's windows as units; with `local > 0`, also start that many
/// `pipe worker` processes here and wait for them.
pub(crate) async fn backfill(
    file: &Path,
    registry: &Registry,
    range: &Range,
    local: usize,
    json: bool,
    cancel: CancellationToken,
) -> Result<ExitCode, Error> {
    let planned = windows(&range.from, &range.to, &range.step)?;
    let (pipeline, store, registered) = worker::register(file, registry, &planned).await?;
    let location = store.location().to_string();
    if !json {
        out!(
            "{pipeline}: {} windows, {} already committed; {} units registered now, {} before, \
             {} failed units retried (state store {location})",
            registered.windows,
            registered.already_committed,
            registered.added,
            registered.existing,
            registered.retried
        );
    }
    let mut ok = true;
    if local == 0 {
        if !json {
            out!(
                "start workers on any host that reaches the state store: pipe worker {}",
                file.display()
            );
        }
    } else {
        ok = run_local(file, local, &store, &pipeline, json, &cancel).await?;
    }
    let units = store.units_status(&pipeline).await?;
    let failed = units.as_ref().map_or(0, |u| u.failed);
    if json {
        crate::output::print_json(&JobReport {
            pipeline,
            state_store: location,
            registered,
            workers_started: local,
            units,
        });
    } else if let Some(units) = &units {
        print_units(units);
    }
    Ok(if cancel.is_cancelled() {
        ExitCode::from(130)
    } else if ok && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Start `n` workers of this binary, print the units' progress while they run, wait for
/// them; `false` if one failed. An interrupt is passed on to them (they give their units
/// back and stop).
async fn run_local(
    file: &Path,
    n: usize,
    store: &StateStore,
    pipeline: &str,
    json: bool,
    cancel: &CancellationToken,
) -> Result<bool, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::internal("finding the pipe executable").with_source(e))?;
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let child = tokio::process::Command::new(&exe)
            .arg("worker")
            .arg(file)
            .arg("--json")
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            // Their own process group: a Ctrl-C at the terminal reaches this process only,
            // which passes one SIGTERM on (two signals would make them exit at once).
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| Error::internal("starting a worker process").with_source(e))?;
        children.push(child);
    }
    let mut ok = true;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut forwarded = false;
    while !children.is_empty() {
        tokio::select! {
            _ = tick.tick() => {
                if !json && let Ok(Some(s)) = store.units_status(pipeline).await {
                    err!("{}", progress_line(&s));
                }
            }
            () = cancel.cancelled(), if !forwarded => {
                forwarded = true;
                for child in &children {
                    if let Some(pid) = child.id() {
                        terminate(pid);
                    }
                }
            }
        }
        let mut running = Vec::with_capacity(children.len());
        for mut child in children {
            match child.try_wait() {
                Ok(Some(status)) => ok &= status.success(),
                Ok(None) => running.push(child),
                Err(e) => return Err(Error::internal("waiting for a worker").with_source(e)),
            }
        }
        children = running;
    }
    Ok(ok)
}

/// Ask worker `pid` to stop (SIGTERM: it gives its unit back).
fn terminate(pid: u32) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// `pipe worker`: claim and run units until none is left (`--wait`: until stopped).
pub(crate) async fn work(
    file: &Path,
    registry: &Registry,
    wait: bool,
    json: bool,
    cancel: CancellationToken,
) -> Result<ExitCode, Error> {
    let options = WorkerOptions {
        wait,
        ..WorkerOptions::default()
    };
    let report = worker::work(file, registry, &options, cancel.clone(), |u| {
        if !json {
            let error = u
                .error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            out!(
                "  unit {}: {}, {} rows, {:.1} s{error}",
                u.window,
                u.status,
                group(u.rows),
                u.seconds
            );
        }
    })
    .await?;
    if json {
        crate::output::print_json(&report);
    } else {
        out!(
            "worker {}: {} units committed, {} found committed, {} failed; {} rows in {:.1} s",
            report.worker,
            report.committed,
            report.already_committed,
            report.failed,
            group(report.rows),
            report.seconds
        );
    }
    Ok(if cancel.is_cancelled() {
        ExitCode::from(130)
    } else if report.failed == 0 && report.job_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn progress_line(s: &UnitsStatus) -> String {
    let eta = s
        .eta_seconds
        .map(|e| format!(", about {e:.0} s left"))
        .unwrap_or_default();
    format!(
        "units: {}/{} done, {} running, {} pending, {} failed; {} rows{eta}",
        s.done,
        s.total,
        s.running,
        s.pending,
        s.failed,
        group(s.rows.max(0) as u64)
    )
}

/// The units part of `pipe status` (and the end of `pipe backfill --workers`).
pub(crate) fn print_units(s: &UnitsStatus) {
    out!("  work {}", progress_line(s));
    for u in &s.running_units {
        let lease = if u.lease_left < 0.0 {
            "lease expired: claimable".to_string()
        } else {
            format!("lease {:.0} s left", u.lease_left)
        };
        out!(
            "    running {} on {} pid {} for {:.1} s ({lease})",
            u.window,
            u.host,
            u.pid,
            u.seconds
        );
    }
    for w in &s.workers {
        out!(
            "    worker {} pid {}: {} units, {} rows, {} rows/s",
            w.host,
            w.pid,
            w.units,
            group(w.rows.max(0) as u64),
            group(w.rows_per_second as u64)
        );
    }
    for f in &s.failures {
        out!("    failed {f}");
    }
}
