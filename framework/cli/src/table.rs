//! `pipe table <verb> <target>`: table operations on any destination that offers them. The
//! target is a pipeline file (its destination's table) or `<type>:<location>`, which the
//! registry hands to that destination type (`delta:s3://lake/orders`,
//! `iceberg:sqlite://.pipe/catalog.db#sales.orders`, `duckdb:.pipe/pipe.duckdb#sales.orders`).

use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use clap::Subcommand;
use pipe_framework::operations::{
    OperationReport, OptimizeRequest, RestoreTarget, TableOperations, VacuumRequest,
};
use pipe_framework::{Destination, Error, Pipeline, Registry};

use crate::output::{bytes, group, print_json};

#[derive(Debug, Subcommand)]
pub(crate) enum TableCommand {
    /// The table's commits, newest first: id, time, operation, rows, files, bytes and the
    /// pipeline run that made each.
    History {
        /// A pipeline file, or `<type>:<location>`.
        target: String,
        /// Show at most this many commits.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Schema, size, layout and history of the table, now or as of a commit (time travel).
    Inspect {
        /// A pipeline file, or `<type>:<location>`.
        target: String,
        /// The commit to show the table at (a Delta version, an Iceberg snapshot id).
        #[arg(long)]
        at: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compact small data files into files of the target size (same rows, one commit).
    Optimize {
        /// A pipeline file, or `<type>:<location>`.
        target: String,
        /// Target file size in MB (default: the destination's `target_file_size_mb`).
        #[arg(long)]
        target_size_mb: Option<u64>,
        /// Cluster rewritten rows by these columns (comma-separated): Z-order on Delta, a sort
        /// on Iceberg (default: the table's sort order).
        #[arg(long, value_delimiter = ',')]
        order_by: Vec<String>,
        /// Only say what would be compacted.
        #[arg(long)]
        dry_run: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget commits older than `--older-than` (keeping the newest `--retain-last`) and
    /// delete the files nothing references any more.
    Vacuum {
        /// A pipeline file, or `<type>:<location>`.
        target: String,
        /// An age (`168h`, `7d`, `30m`, `0s`) or an RFC 3339 time.
        #[arg(long, default_value = "168h")]
        older_than: String,
        /// Keep at least this many of the newest commits.
        #[arg(long, default_value_t = 1)]
        retain_last: usize,
        /// Also delete files under the table that no commit references (left by crashed
        /// writers), older than `--older-than`.
        #[arg(long)]
        orphans: bool,
        /// Only list what would go.
        #[arg(long)]
        dry_run: bool,
        /// Allow a retention below the table's own minimum (Delta:
        /// `delta.deletedFileRetentionDuration`, 7 days by default).
        #[arg(long)]
        no_enforce_retention: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the table's content that of an earlier commit (as a new commit where the format
    /// has them; Iceberg points `main` back at the snapshot).
    Restore {
        /// A pipeline file, or `<type>:<location>`.
        target: String,
        /// The commit to restore.
        #[arg(
            long,
            conflicts_with = "timestamp",
            required_unless_present = "timestamp"
        )]
        to: Option<String>,
        /// Restore the commit that was current at this time (RFC 3339).
        #[arg(long)]
        timestamp: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The destination a target names.
pub(crate) fn resolve(target: &str, registry: &Registry) -> Result<Arc<dyn Destination>, Error> {
    let path = std::path::Path::new(target);
    if target.ends_with(".toml") || path.is_file() {
        return Ok(Pipeline::load(path, registry)?.destination);
    }
    match target.split_once(':') {
        Some((kind, location)) if !kind.is_empty() && !kind.contains('/') => {
            registry.locate_destination(kind, location)
        }
        _ => Err(Error::user(format!(
            "`{target}` is neither a pipeline file nor `<type>:<location>` (e.g. \
             delta:./lake/orders)"
        ))),
    }
}

fn operations(destination: &dyn Destination) -> Result<&dyn TableOperations, Error> {
    destination.operations().ok_or_else(|| {
        Error::user(format!(
            "destination {} has no table operations",
            destination.describe()
        ))
    })
}

/// An age (`168h`, `7d`, `0s`) back from now, or an RFC 3339 time.
fn point_in_time(text: &str) -> Result<DateTime<Utc>, Error> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| Error::user(format!("`{text}` is neither an age (7d, 168h) nor a time")))?;
    let age = match unit {
        "s" => Duration::try_seconds(n),
        "m" | "min" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => None,
    }
    .ok_or_else(|| Error::user(format!("`{text}`: give an age like 30m, 168h, 7d")))?;
    Ok(Utc::now() - age)
}

pub(crate) async fn run(command: TableCommand, registry: &Registry) -> Result<ExitCode, Error> {
    match command {
        TableCommand::History {
            target,
            limit,
            json,
        } => {
            let destination = resolve(&target, registry)?;
            let commits = operations(destination.as_ref())?
                .history(Some(limit))
                .await?;
            if json {
                print_json(&commits);
            } else {
                print_history(&commits);
            }
        }
        TableCommand::Inspect { target, at, json } => {
            let destination = resolve(&target, registry)?;
            match operations(destination.as_ref())?
                .inspect(at.as_deref())
                .await?
            {
                None if json => print_json(&serde_json::Value::Null),
                None => out!(
                    "{}: the table does not exist yet (the first run creates it)",
                    destination.describe()
                ),
                Some(info) if json => print_json(&info),
                Some(info) => crate::inspect::print(&info),
            }
        }
        TableCommand::Optimize {
            target,
            target_size_mb,
            order_by,
            dry_run,
            json,
        } => {
            let destination = resolve(&target, registry)?;
            let request = OptimizeRequest {
                target_file_size: target_size_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
                order_by,
                dry_run,
            };
            let report = operations(destination.as_ref())?.optimize(&request).await?;
            print_report(&report, json);
        }
        TableCommand::Vacuum {
            target,
            older_than,
            retain_last,
            orphans,
            dry_run,
            no_enforce_retention,
            json,
        } => {
            let destination = resolve(&target, registry)?;
            let request = VacuumRequest {
                older_than: point_in_time(&older_than)?,
                retain_last: retain_last.max(1),
                orphans,
                dry_run,
                enforce_retention: !no_enforce_retention,
            };
            let report = operations(destination.as_ref())?.vacuum(&request).await?;
            print_report(&report, json);
        }
        TableCommand::Restore {
            target,
            to,
            timestamp,
            json,
        } => {
            let destination = resolve(&target, registry)?;
            let to = match (to, timestamp) {
                (Some(id), _) => RestoreTarget::Commit(id),
                (None, Some(t)) => RestoreTarget::Timestamp(
                    DateTime::parse_from_rfc3339(&t)
                        .map_err(|e| {
                            Error::user(format!("--timestamp {t}: not an RFC 3339 time: {e}"))
                        })?
                        .with_timezone(&Utc),
                ),
                (None, None) => return Err(Error::user("restore needs --to or --timestamp")),
            };
            let report = operations(destination.as_ref())?.restore(&to).await?;
            print_report(&report, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_history(commits: &[pipe_framework::CommitInfo]) {
    out!(
        "  {:<21}{:<27}{:<12}{:>12}{:>8}{:>11}  run",
        "commit",
        "time",
        "operation",
        "rows",
        "files",
        "bytes"
    );
    let count = |n: Option<u64>| n.map_or_else(String::new, group);
    for c in commits {
        let mark = if c.current { "*" } else { " " };
        let run = match (&c.pipeline, &c.run_id) {
            (Some(p), Some(r)) => format!("{p} {r}"),
            (Some(p), None) => p.clone(),
            _ => String::new(),
        };
        out!(
            "{mark} {:<21}{:<27}{:<12}{:>12}{:>8}{:>11}  {run}",
            c.id,
            c.timestamp,
            c.operation,
            count(c.rows),
            count(c.files),
            c.bytes.map_or_else(String::new, bytes),
        );
    }
}

fn print_report(report: &OperationReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    let what = if report.dry_run { "would" } else { "did" };
    out!(
        "{} ({what}): {} files added, {} removed, {} commits forgotten, {} files deleted{}",
        report.operation,
        report.files_added,
        report.files_removed,
        report.commits_removed,
        report.deleted.len(),
        report
            .commit_id
            .as_ref()
            .map_or_else(String::new, |c| format!("; commit {c}"))
    );
    for (k, v) in &report.detail {
        out!("  {k}: {v}");
    }
    for f in &report.deleted {
        out!("  {f}");
    }
}
