//! `pipe iceberg <verb>`: Iceberg-only tools.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;
use pipe_destination_iceberg::{RelocateRequest, relocate};
use pipe_framework::Error;

use crate::output::{bytes, group, print_json};

#[derive(Debug, Subcommand)]
pub(crate) enum IcebergCommand {
    /// Make a replicated copy of a table (DistCp, `aws s3 sync`, rclone, `cp -r`) readable at
    /// its new place by rewriting its metadata only: manifests, manifest lists and the
    /// metadata file get paths under `--to`; no data file is read or copied. A rerun after a
    /// later copy pass rewrites only what is new.
    Relocate {
        /// The source table: its metadata file (at the old or new place), or
        /// `<catalog uri>#<namespace.table>`.
        source: String,
        /// The prefix the table's paths start with (`s3://prod/warehouse`, `/data/wh`).
        #[arg(long)]
        from: String,
        /// Where the copy is (`s3://dr/warehouse`).
        #[arg(long)]
        to: String,
        /// Register the relocated table in this catalog, as `<catalog uri>#<namespace.table>`
        /// (a rerun commits the new snapshots to it). Without it, the metadata file is
        /// written and its location printed.
        #[arg(long)]
        register_as: Option<String>,
        /// An object-store setting `key=value` (as `storage_options`), repeatable.
        #[arg(long = "storage-option", value_name = "KEY=VALUE")]
        storage_options: Vec<String>,
        /// Check that the copy is complete and say what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(command: IcebergCommand) -> Result<ExitCode, Error> {
    match command {
        IcebergCommand::Relocate {
            source,
            from,
            to,
            register_as,
            storage_options,
            dry_run,
            json,
        } => {
            let mut options = BTreeMap::new();
            for option in storage_options {
                let Some((k, v)) = option.split_once('=') else {
                    return Err(Error::user(format!(
                        "--storage-option `{}`: expected KEY=VALUE",
                        option.split('=').next().unwrap_or_default()
                    )));
                };
                options.insert(k.trim().to_string(), v.to_string());
            }
            let request = RelocateRequest {
                source,
                from,
                to,
                register_as,
                storage_options: options,
                dry_run,
            };
            let report = relocate(&request).await?;
            if json {
                print_json(&report);
            } else {
                out!("source      {}", report.source_metadata);
                out!(
                    "snapshots   {} ({} new)",
                    group(report.snapshots as u64),
                    group(report.new_snapshots as u64)
                );
                out!(
                    "manifests   {} rewritten, {} reused; {} manifest lists written",
                    group(report.manifests_rewritten as u64),
                    group(report.manifests_reused as u64),
                    group(report.manifest_lists_written as u64)
                );
                out!(
                    "checked     {} files, {} at the new place",
                    group(report.files_checked as u64),
                    bytes(report.bytes_checked)
                );
                match &report.metadata_location {
                    Some(location) => out!("{:<11} {location}", report.outcome),
                    None => out!("{}: nothing written", report.outcome),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
