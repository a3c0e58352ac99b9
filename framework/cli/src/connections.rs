//! `pipe connections list|test`: the named connections of connections.toml.

use std::process::ExitCode;

use clap::Subcommand;
use pipe_framework::config::connections::Connections;
use pipe_framework::{Error, Registry};

/// `pipe connections …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConnectionsCommand {
    /// Every named connection: its type, file and keys (secrets masked).
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reach a connection (a source opens, a destination is checked), changing nothing.
    Test {
        /// The connection's name.
        name: String,
    },
}

pub(crate) async fn run(
    command: ConnectionsCommand,
    registry: &Registry,
) -> Result<ExitCode, Error> {
    let connections = Connections::global()?;
    match command {
        ConnectionsCommand::List { json } => {
            if json {
                let all: Vec<serde_json::Value> = connections
                    .all()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name,
                            "type": c.kind(),
                            "file": c.file.display().to_string(),
                            "keys": c.masked().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                        })
                    })
                    .collect();
                crate::output::print_json(&all);
                return Ok(ExitCode::SUCCESS);
            }
            if connections.all().next().is_none() {
                let files: Vec<String> = connections
                    .searched
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect();
                out!("no connections (looked in {})", files.join(", "));
            }
            for c in connections.all() {
                out!(
                    "{}  ({}, {})",
                    c.name,
                    c.kind().unwrap_or("no type"),
                    c.file.display()
                );
                for (key, value) in c.masked() {
                    if key != "type" {
                        out!("    {key} = {value}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCommand::Test { name } => {
            match pipe_framework::probe::connection(registry, &name).await {
                Ok(what) => {
                    out!("{name}: reachable ({what})");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.message().starts_with("unknown connection") => Err(e),
                Err(e) => {
                    out!("{name}: unreachable");
                    crate::output::print_error(&e);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
