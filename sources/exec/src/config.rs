//! The `[source]` table of `type = "exec"` (docs/custom-sources.md has the protocol).

use std::collections::BTreeMap;
use std::path::PathBuf;

use pipe_framework::Secret;
use serde::Deserialize;

/// Runs a program that writes an Arrow IPC stream to its standard output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments, e.g. `["python3", "source.py"]`. Found on `PATH`
    /// unless it holds a `/`; relative paths resolve against `cwd`.
    pub command: Vec<String>,
    /// Environment variables added for the program. Values are secrets: never printed.
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
    /// The working directory (default: pipe's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Handed to the program as the `config` member of the JSON on its standard input.
    #[serde(default)]
    pub config: toml::Table,
    /// The program keeps state between runs: it receives the committed state and writes its
    /// new state to the file named by `PIPE_STATE_OUT`, committed with the data.
    #[serde(default)]
    pub incremental: bool,
    /// The program can read a backfill window (`window` in its input).
    #[serde(default)]
    pub windows: bool,
    /// Lines of the program's standard error kept for an error message (default 20).
    #[serde(
        default = "default_tail",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 1000>"
    )]
    pub stderr_lines: usize,
}

fn default_tail() -> usize {
    20
}
