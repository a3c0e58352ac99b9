//! # pipe-cli
//!
//! The `pipe` command. The binary is [`main_with`] over [`default_registry`]; a custom build
//! (see `examples/custom-source`) calls [`main_with`] with its own registry to add connectors.

#[macro_use]
mod output;
mod check;
mod connections;
mod git;
#[cfg(feature = "destination-iceberg")]
mod iceberg;
mod inspect;
mod load;
mod ops;
mod signals;
mod table;
mod uri;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use pipe_framework::runner::Session;
use pipe_framework::{Error, ErrorKind, Pipeline, Registry, RunProgress, RunStatus};
pub(crate) use signals::cancel_on_signal;
use tokio_util::sync::CancellationToken;

/// The registry of every connector compiled into this binary (each behind a cargo feature).
pub fn default_registry() -> Registry {
    let registry = Registry::new()
        .stage("contract", pipe_quality::ContractFactory)
        .destination("null", pipe_framework::null::NullFactory);
    #[cfg(feature = "source-file")]
    let registry = registry.source("file", pipe_source_file::FileSourceFactory);
    #[cfg(feature = "source-postgres")]
    let registry = registry.source("postgres", pipe_source_postgres::PostgresFactory);
    #[cfg(feature = "source-http")]
    let registry = registry.source("http", pipe_source_http::HttpFactory);
    #[cfg(feature = "source-exec")]
    let registry = registry.source("exec", pipe_source_exec::ExecFactory);
    #[cfg(feature = "destination-duckdb")]
    let registry = registry.destination("duckdb", pipe_destination_duckdb::DuckDbFactory);
    #[cfg(feature = "destination-iceberg")]
    let registry = registry
        .destination("iceberg", pipe_destination_iceberg::IcebergFactory)
        .service("catalog", pipe_destination_iceberg::CatalogService);
    #[cfg(feature = "destination-delta")]
    let registry = registry.destination("delta", pipe_destination_delta::DeltaFactory);
    #[cfg(feature = "destination-files")]
    let registry = registry.destination("files", pipe_destination_files::FilesFactory);
    registry
}

/// pipe: Arrow-native ETL pipelines defined in TOML.
#[derive(Debug, Parser)]
#[command(name = "pipe", version, about, long_about = None)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug). `PIPE_LOG` (a tracing filter) overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline once: extract → metadata → contract → load, committed atomically.
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print the run summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Never draw a progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
    /// Load in one line, without a pipeline file: `pipe load postgres://…?table=public.orders
    /// parquet://out/orders`. Builds the pipeline a file would hold (see it with --print,
    /// keep it with --save) and runs it as `pipe run` does.
    Load {
        #[command(flatten)]
        args: load::LoadArgs,
        /// Also write the pipeline file here (re-run it with `pipe run FILE`).
        #[arg(long)]
        save: Option<PathBuf>,
        /// Only print the pipeline file; load nothing.
        #[arg(long)]
        print: bool,
        /// Print the run summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Never draw a progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
    /// Write a commented starter pipeline file from a source and a destination URI (as
    /// `pipe load` takes them).
    Init {
        #[command(flatten)]
        args: load::LoadArgs,
        /// The file to write.
        #[arg(short, long, default_value = "pipeline.toml")]
        output: PathBuf,
        /// Overwrite the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Named connections (connections.toml): list them, test one.
    Connections {
        #[command(subcommand)]
        command: connections::ConnectionsCommand,
    },
    /// Check a pipeline without moving data: config, components, source schema, destination.
    Validate {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List the registered sources, destinations (with write modes) and stages.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load a range of the source's cursor window by window, each window its own committed
    /// unit; a rerun skips the windows already committed (resumable after a crash).
    Backfill {
        /// The pipeline file (its source needs a `cursor`).
        pipeline: PathBuf,
        /// Start of the range (inclusive): an integer, a date (2024-01-01) or a timestamp.
        #[arg(long)]
        from: String,
        /// End of the range (exclusive).
        #[arg(long)]
        to: String,
        /// Window size: an integer for integer cursors, else 30s, 15m, 6h, 1d, 1w.
        #[arg(long)]
        step: String,
        /// Windows loaded at the same time.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// Register the windows as work units in the state store for `pipe worker`s on any
        /// host; with a number, also start that many workers here and wait for them.
        #[arg(long, num_args = 0..=1, default_missing_value = "0", conflicts_with = "parallel")]
        workers: Option<usize>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Claim a pipeline's work units (`pipe backfill --workers`) from its state store and run
    /// them, one atomic run each, until none is left; any number may run on any hosts.
    Worker {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Keep waiting for new units when none is left, until stopped (SIGTERM).
        #[arg(long)]
        wait: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a pipeline's destination table: schema (with field ids), rows, files, size,
    /// layout and every commit (snapshot) with the run that made it.
    Inspect {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a pipeline's last runs, committed state (cursor) and backfill progress.
    Status {
        /// The pipeline file.
        pipeline: PathBuf,
        /// How many runs to show.
        #[arg(long, default_value_t = 10)]
        runs: i64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a data contract without touching data (for CI): validate it, classify the
    /// changes against an older version (exit 1 on a breaking one), run it over sample data.
    Check {
        /// A contract file, or a pipeline file with a [contract] section.
        file: PathBuf,
        /// The old version: a file, or `REF:PATH` read with `git show` (e.g.
        /// `origin/main:contracts/orders.toml`).
        #[arg(long)]
        against: Option<String>,
        /// A data file (CSV, NDJSON, Parquet, Arrow IPC) to run the contract over; every rule
        /// is reported, and exit is 1 if a real run over it would fail.
        #[arg(long)]
        sample: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = check::CheckFormat::Text)]
        format: check::CheckFormat,
    },
    /// Data-contract tools.
    Contract {
        #[command(subcommand)]
        command: ContractCommand,
    },
    /// Table operations on a pipeline's table or on `<type>:<location>`: history, inspect
    /// (time travel), optimize, vacuum, restore.
    Table {
        #[command(subcommand)]
        command: table::TableCommand,
    },
    /// Run a server until SIGTERM or Ctrl-C: `pipe serve catalog` is an Iceberg REST catalog
    /// (`pipe serve catalog --help`; `pipe list` shows every service).
    Serve {
        /// The service.
        service: String,
        /// The service's own options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Iceberg tools: `pipe iceberg relocate` rewrites a replicated table's metadata for its
    /// new place.
    #[cfg(feature = "destination-iceberg")]
    Iceberg {
        #[command(subcommand)]
        command: iceberg::IcebergCommand,
    },
    /// Run every pipeline of a directory that has a [schedule], until SIGTERM or Ctrl-C.
    Schedule {
        /// The directory of pipeline files.
        dir: PathBuf,
        /// Seconds running runs may take to finish after a shutdown signal before they are
        /// cancelled (and commit nothing).
        #[arg(long, default_value_t = 30)]
        grace_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ContractCommand {
    /// Write a contract as a JSON Schema (draft 2020-12) describing one row; rules JSON
    /// Schema cannot express are kept under `x-pipe-*` keys.
    Export {
        /// A contract file, or a pipeline file with a [contract] section.
        file: PathBuf,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Run the `pipe` command line with `registry`; returns the process exit code
/// (0 success, 1 failure, 3 commit outcome unknown, 130 interrupted).
pub fn main_with(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::print_error(&Error::external(format!(
                "cannot start the async runtime: {e}"
            )));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli.command, registry));
    // Everything was committed or rolled back inside `dispatch`; a reader thread still blocked
    // on a pipe or a slow network read after a cancellation must not hold the process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => {
            output::print_error(&e);
            exit_code(&e)
        }
    }
}

fn exit_code(e: &Error) -> ExitCode {
    match e.kind() {
        ErrorKind::Cancelled => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    }
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // Libraries' debug logs can print what they were configured with (object store
    // credentials among it): `-vv` turns on pipe's own debug logs only; a `PIPE_LOG` filter
    // reaches the libraries for whoever asks explicitly.
    let default = match verbose {
        // pipe's own warnings are for the user (a wait for a catalog lock, an interrupt);
        // delta-rs' kernel and volo (the Hive Metastore client) log the errors they return:
        // they are printed once, as the error.
        0 => "error,pipe=warn,buoyant_kernel=off,volo=off,volo_thrift=off",
        1 => "info",
        // a target matches by prefix: the binary, the framework and every connector crate
        _ => "info,pipe=debug",
    };
    let filter = EnvFilter::try_from_env("PIPE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn dispatch(command: Command, registry: Registry) -> Result<ExitCode, Error> {
    match command {
        Command::Run {
            pipeline,
            json,
            no_progress,
        } => run(&pipeline, &registry, json, no_progress).await,
        Command::Validate { pipeline, json } => validate(&pipeline, &registry, json).await,
        Command::Load {
            args,
            save,
            print,
            json,
            no_progress,
        } => load::load(&args, save.as_deref(), print, &registry, json, no_progress).await,
        Command::Init {
            args,
            output,
            force,
        } => load::init(&args, &output, force),
        Command::Connections { command } => connections::run(command, &registry).await,
        Command::List { json } => {
            output::print_list(&registry.components(), json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill {
            pipeline,
            from,
            to,
            step,
            parallel,
            workers,
            json,
        } => {
            let cancel = CancellationToken::new();
            cancel_on_signal(cancel.clone());
            let range = ops::Range { from, to, step };
            match workers {
                Some(n) => workers::backfill(&pipeline, &registry, &range, n, json, cancel).await,
                None => ops::backfill(&pipeline, &registry, &range, parallel, json, cancel).await,
            }
        }
        Command::Worker {
            pipeline,
            wait,
            json,
        } => {
            let cancel = CancellationToken::new();
            cancel_on_signal(cancel.clone());
            workers::work(&pipeline, &registry, wait, json, cancel).await
        }
        Command::Status {
            pipeline,
            runs,
            json,
        } => ops::status(&pipeline, &registry, runs, json).await,
        Command::Inspect { pipeline, json } => inspect::inspect(&pipeline, &registry, json).await,
        Command::Table { command } => table::run(command, &registry).await,
        #[cfg(feature = "destination-iceberg")]
        Command::Iceberg { command } => iceberg::run(command).await,
        Command::Check {
            file,
            against,
            sample,
            format,
        } => {
            let args = check::CheckArgs {
                file,
                against,
                sample,
                format,
            };
            check::check(args, &registry).await
        }
        Command::Contract {
            command: ContractCommand::Export { file, output },
        } => check::export(&file, output.as_deref()),
        Command::Serve { service, args } => {
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone());
            let mut argv = vec![format!("pipe serve {service}")];
            argv.extend(args);
            registry.serve(&service, argv, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule { dir, grace_secs } => {
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone());
            pipe_framework::scheduler::run(
                &dir,
                &registry,
                shutdown,
                std::time::Duration::from_secs(grace_secs),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(
    path: &std::path::Path,
    registry: &Registry,
    json: bool,
    no_progress: bool,
) -> Result<ExitCode, Error> {
    let config = pipe_framework::config::ConfigFile::read(path)?;
    run_config(config, false, registry, json, no_progress).await
}

/// Run the pipeline `config` holds (`in_memory`: not from its path) as `pipe run` does.
pub(crate) async fn run_config(
    config: pipe_framework::config::ConfigFile,
    in_memory: bool,
    registry: &Registry,
    json: bool,
    no_progress: bool,
) -> Result<ExitCode, Error> {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let session = Session::open_config(config, registry, in_memory).await?;
    let progress = Arc::new(RunProgress::default());
    let bar = (!no_progress && !json).then(|| output::Progress::start(progress.clone()));
    let result = session.run(None, &cancel, progress).await;
    if let Some(bar) = bar {
        bar.finish().await;
    }
    if let Err(e) = session.close().await {
        tracing::warn!(error = ?e, "releasing the lease");
    }
    let result = result?;
    if json {
        output::print_json(&result.summary);
    } else {
        output::print_summary(&result.summary);
    }
    match result.error {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => {
            output::print_error(&e);
            Ok(match result.summary.status {
                RunStatus::Cancelled => ExitCode::from(130),
                RunStatus::Unknown => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            })
        }
    }
}

async fn validate(
    path: &std::path::Path,
    registry: &Registry,
    json: bool,
) -> Result<ExitCode, Error> {
    let mut pipeline = Pipeline::load(path, registry)?;
    let schema = pipeline
        .source
        .schema()
        .await
        .map_err(|e| e.context("opening the source"))?;
    let ctx = pipe_framework::RunContext::new(pipeline.name.clone());
    for stage in &mut pipeline.stages {
        let name = stage.name().to_string();
        stage.bind(&schema, &ctx).map_err(|e| {
            e.context(format!(
                "checking the {name} stage against the source schema"
            ))
        })?;
    }
    pipe_framework::runtime::check_quarantine(&pipeline.stages, pipeline.destination.as_ref())?;
    pipeline
        .destination
        .check()
        .await
        .map_err(|e| e.context(format!("checking {}", pipeline.destination.describe())))?;
    // A run needs its state store (the lease and the ledger): reach it now.
    pipe_framework::state::StateStore::check(&pipeline.state)
        .await
        .map_err(|e| e.context("checking the state store"))?;
    output::print_validation(&pipeline, &schema, json);
    Ok(ExitCode::SUCCESS)
}
