//! `pipe load SOURCE DESTINATION` (a one-line load) and `pipe init` (a starter pipeline
//! file): both turn URIs into the pipeline file a user would write ([`crate::uri`]); `load`
//! runs that pipeline exactly as `pipe run` runs a file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use pipe_framework::config::ConfigFile;
use pipe_framework::config::connections::Connections;
use pipe_framework::{Error, Registry};
use toml::{Table, Value};

use crate::uri;

/// What `pipe load` and `pipe init` take.
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Where the data comes from: `postgres://…?table=SCHEMA.TABLE`, a path or glob,
    /// `s3://…`, or `CONNECTION:TABLE`.
    source: String,
    /// Where it goes: `duckdb://FILE?table=S.T`, `delta://DIR`, `parquet://DIR`,
    /// `csv://DIR`, `ndjson://DIR`, `iceberg+sqlite://…`, `iceberg+rest://…`, or a
    /// connection name.
    destination: String,
    /// The destination table (DuckDB, Iceberg): default the source's table or file name.
    #[arg(long)]
    table: Option<String>,
    /// append, replace or merge.
    #[arg(long)]
    mode: Option<String>,
    /// Merge key columns, comma-separated (with --mode merge).
    #[arg(long)]
    merge_keys: Option<String>,
    /// Load incrementally on this column (database sources): each run reads rows past the
    /// last committed value.
    #[arg(long)]
    cursor: Option<String>,
    /// The pipeline's name (default: the table's name).
    #[arg(long)]
    name: Option<String>,
}

impl LoadArgs {
    /// The pipeline file's text for these arguments, with a comment saying where it came
    /// from; `guide` (the file being written, `pipe init`) adds a commented guide. `shown`:
    /// the text is printed or saved, so URL passwords become `${PGPASSWORD}` /
    /// `${PIPE_DESTINATION_PASSWORD}` references (with a note on stderr).
    pub(crate) fn pipeline_text(
        &self,
        command: &str,
        guide: Option<&Path>,
        shown: bool,
    ) -> Result<String, Error> {
        let connections = Connections::global()?;
        let (mut source, default_name) =
            uri::source(&self.source, self.cursor.as_deref(), connections)?;
        let mut destination = uri::destination(
            &self.destination,
            self.table.as_deref(),
            &default_name,
            connections,
        )?;
        if let Some(mode) = &self.mode {
            destination.insert("mode".into(), Value::String(mode.clone()));
        }
        if let Some(keys) = &self.merge_keys {
            let keys = keys.split(',').map(|k| Value::String(k.trim().to_string()));
            destination.insert("merge_keys".into(), Value::Array(keys.collect()));
        }
        if shown {
            for (table, var) in [
                (&mut source, "PGPASSWORD"),
                (&mut destination, "PIPE_DESTINATION_PASSWORD"),
            ] {
                if uri::hide_passwords(table, var) {
                    err!("note: the password is not written; set {var} when this pipeline runs");
                }
            }
        }
        let name = self.name.clone().unwrap_or(default_name);
        let mut text = format!(
            "# Written by `pipe {command} {} {}`.\n",
            pipe_framework::secret::redact(&self.source),
            pipe_framework::secret::redact(&self.destination)
        );
        if let Some(file) = guide {
            text.push_str(&GUIDE.replace("THIS_FILE", &file.display().to_string()));
        }
        text.push_str(&format!("name = {}\n\n", Value::String(name)));
        text.push_str(&section("source", &source));
        if guide.is_some() {
            text.push_str(CONTRACT_GUIDE);
        }
        text.push_str(&section("destination", &destination));
        Ok(text)
    }
}

const GUIDE: &str = "#
# Run it:      pipe run THIS_FILE
# Check it:    pipe validate THIS_FILE
# Every key:   docs/pipelines.md
";

const CONTRACT_GUIDE: &str =
    "# A data contract checks every row before it lands (docs/contracts.md), e.g.:
# [contract]
# on_violation = \"fail\"          # or \"drop\", \"quarantine\", \"warn\"
# primary_key = [\"id\"]
# [[contract.columns]]
# name = \"amount\"
# min = 0

";

/// `[name]` and its keys, nested tables inline (`catalog = { type = "sql", … }`).
fn section(name: &str, table: &Table) -> String {
    let mut text = format!("[{name}]\n");
    // `type` first, as a person writes it
    let first = table.get_key_value("type").into_iter();
    for (key, value) in first.chain(table.iter().filter(|(k, _)| *k != "type")) {
        text.push_str(&format!("{key} = {value}\n"));
    }
    text.push('\n');
    text
}

/// `pipe load`: build the pipeline, optionally save it, and run it as `pipe run` would.
pub(crate) async fn load(
    args: &LoadArgs,
    save: Option<&Path>,
    print: bool,
    registry: &Registry,
    json: bool,
    no_progress: bool,
) -> Result<ExitCode, Error> {
    if print {
        out!("{}", args.pipeline_text("load", None, true)?.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let text = args.pipeline_text("load", None, false)?;
    let path = match save {
        Some(path) => {
            write_new(path, &args.pipeline_text("load", None, true)?, true)?;
            path.to_path_buf()
        }
        None => PathBuf::from("<pipe load>.toml"),
    };
    // Validate as a file would be, with errors naming the command's arguments.
    let config = ConfigFile::new(path, text);
    pipe_framework::Pipeline::from_file(&config, registry)
        .map_err(|e| e.context("the pipeline these URIs make (see it with --print)"))?;
    crate::run_config(config, save.is_none(), registry, json, no_progress).await
}

/// `pipe init`: write a commented starter pipeline.
pub(crate) fn init(args: &LoadArgs, output: &Path, force: bool) -> Result<ExitCode, Error> {
    let text = args.pipeline_text("init", Some(output), true)?;
    write_new(output, &text, force)?;
    out!("wrote {}", output.display());
    Ok(ExitCode::SUCCESS)
}

fn write_new(path: &Path, text: &str, overwrite: bool) -> Result<(), Error> {
    if !overwrite && path.exists() {
        return Err(Error::user(format!(
            "{} exists; pass --force to overwrite it",
            path.display()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::from(e).context(format!("creating {}", dir.display())))?;
    }
    std::fs::write(path, text)
        .map_err(|e| Error::from(e).context(format!("writing {}", path.display())))
}
