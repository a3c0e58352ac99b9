//! `pipe delta …`: operations on a Delta table by its path (local directory or object store
//! URL; credentials from the environment).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use pipe_destination_delta::Location;
use pipe_destination_delta::ops::{self, RestoreTo};
use pipe_framework::Error;

use crate::output::print_json;

#[derive(Debug, Subcommand)]
pub(crate) enum DeltaCommand {
    /// The table's commits, newest first: version, time, operation, metrics and the pipeline
    /// run that made each.
    History {
        /// The table: a directory or `s3://`, `gs://`, `az://` URL.
        path: String,
        /// Show only the newest N commits.
        #[arg(long)]
        limit: Option<usize>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete data files the table no longer references and that are older than the
    /// retention period.
    Vacuum {
        /// The table.
        path: String,
        /// Keep unreferenced files younger than this many hours (readers of older versions
        /// need them).
        #[arg(long)]
        retain_hours: u64,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Allow a retention below the table's `delta.deletedFileRetentionDuration`
        /// (default 7 days): time travel to versions older than it breaks.
        #[arg(long)]
        no_enforce_retention: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compact small files into larger ones (same rows, new version).
    Optimize {
        /// The table.
        path: String,
        /// Z-order by these columns (comma-separated) instead of bin-packing.
        #[arg(long, value_delimiter = ',')]
        zorder: Vec<String>,
        /// Target file size in MB.
        #[arg(long)]
        target_size_mb: Option<u64>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the table's content that of an earlier version (as a new version).
    Restore {
        /// The table.
        path: String,
        /// The version to restore.
        #[arg(
            long,
            conflicts_with = "timestamp",
            required_unless_present = "timestamp"
        )]
        version: Option<i64>,
        /// Restore the version current at this time (RFC 3339, e.g. 2026-11-30T10:00:00Z).
        #[arg(long)]
        timestamp: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Schema, rows, files, size, properties and history of the table, at its newest version
    /// or at `--version N` (time travel).
    Inspect {
        /// The table.
        path: String,
        /// The version to show.
        #[arg(long)]
        version: Option<i64>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn location(path: &str) -> Result<Location, Error> {
    Ok(Location::new(path, Default::default())?)
}

pub(crate) async fn run(command: DeltaCommand) -> Result<ExitCode, Error> {
    match command {
        DeltaCommand::History { path, limit, json } => {
            let commits = ops::history(&location(&path)?, limit).await?;
            if json {
                print_json(&commits);
            } else {
                out!(
                    "{:>7}  {:<27}{:<12}{:<24}metrics",
                    "version",
                    "time",
                    "operation",
                    "run"
                );
                for c in &commits {
                    let get = |k: &str| c.summary.get(k).map(String::as_str).unwrap_or("");
                    let run = match (get("pipe.pipeline"), get("pipe.run-seq")) {
                        ("", _) => String::new(),
                        (p, s) => format!("{p} #{s}"),
                    };
                    let metrics: Vec<String> = c
                        .summary
                        .iter()
                        .filter_map(|(k, v)| Some(format!("{}={v}", k.strip_prefix("metric.")?)))
                        .collect();
                    out!(
                        "{:>7}  {:<27}{:<12}{:<24}{}",
                        c.id,
                        c.timestamp,
                        c.operation,
                        run,
                        metrics.join(" ")
                    );
                }
            }
        }
        DeltaCommand::Vacuum {
            path,
            retain_hours,
            dry_run,
            no_enforce_retention,
            json,
        } => {
            let report = ops::vacuum(
                &location(&path)?,
                retain_hours,
                dry_run,
                !no_enforce_retention,
            )
            .await?;
            if json {
                print_json(&report);
            } else {
                let verb = if report.dry_run {
                    "would delete"
                } else {
                    "deleted"
                };
                out!("{verb} {} files", report.files.len());
                for f in &report.files {
                    out!("  {f}");
                }
            }
        }
        DeltaCommand::Optimize {
            path,
            zorder,
            target_size_mb,
            json,
        } => {
            let size = target_size_mb.map(|mb| mb.saturating_mul(1024 * 1024));
            let report = ops::optimize(&location(&path)?, &zorder, size).await?;
            if json {
                print_json(&report);
            } else {
                match report.version {
                    Some(v) => out!(
                        "version {v}: {} files compacted into {}",
                        report.files_removed,
                        report.files_added
                    ),
                    None => out!("nothing to compact"),
                }
            }
        }
        DeltaCommand::Restore {
            path,
            version,
            timestamp,
            json,
        } => {
            let to = match (version, timestamp) {
                (Some(v), _) => RestoreTo::Version(v),
                (None, Some(t)) => RestoreTo::Timestamp(
                    DateTime::parse_from_rfc3339(&t)
                        .map_err(|e| {
                            Error::user(format!("--timestamp {t}: not an RFC 3339 time: {e}"))
                        })?
                        .with_timezone(&Utc),
                ),
                (None, None) => return Err(Error::user("restore needs --version or --timestamp")),
            };
            let report = ops::restore(&location(&path)?, to).await?;
            if json {
                print_json(&report);
            } else {
                out!(
                    "version {}: restored ({} files removed, {} files restored)",
                    report.version,
                    report.files_removed,
                    report.files_restored
                );
            }
        }
        DeltaCommand::Inspect {
            path,
            version,
            json,
        } => match ops::inspect(&location(&path)?, version).await? {
            None => return Err(Error::user(format!("there is no Delta table at {path}"))),
            Some(info) if json => print_json(&info),
            Some(info) => crate::inspect::print(&info),
        },
    }
    Ok(ExitCode::SUCCESS)
}
