//! # pipe-destination-duckdb
//!
//! `type = "duckdb"`: loads into a DuckDB database file. Each run is one DuckDB transaction:
//! the metadata stage's DDL (create table, add/widen columns), the rows (streamed into a
//! parallel `INSERT … SELECT` over a table function: straight into the table for
//! `append`/`replace`, into a temp staging table for `merge`), the merge itself and a row in
//! the `_pipe.runs` ledger commit together or not at all.

mod commit;
mod config;
mod database;
mod error;
mod operations;
mod quarantine;
mod sink;
mod stream;
mod table;
mod types;
mod wire;
mod worker;

use std::sync::Arc;

use async_trait::async_trait;
use pipe_framework::{
    BuildContext, CommitInfo, Destination, DestinationFactory, Error, PrepareRequest,
    QuarantineSpec, Result, RunContext, Sink, State, TableInfo, TableOperations, WriteMode,
};

pub use config::DuckDbConfig;
pub use error::DuckError;
pub use sink::DuckDbSink;

use table::TableName;

/// Registers as `type = "duckdb"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DuckDbFactory;

impl DestinationFactory for DuckDbFactory {
    type Config = DuckDbConfig;

    fn description(&self) -> &'static str {
        "DuckDB database file; one transaction per run"
    }

    fn modes(&self) -> &'static [WriteMode] {
        &WriteMode::ALL
    }

    fn build(&self, config: DuckDbConfig, _ctx: &BuildContext) -> Result<Arc<dyn Destination>> {
        Ok(Arc::new(DuckDbDestination::new(config)?))
    }

    /// `location` is `<database file>#<schema.table>` (`.pipe/pipe.duckdb#sales.orders`).
    /// A connection names the database or catalog; the check needs some table name.
    fn probe(&self, keys: &[&str]) -> Vec<(&'static str, &'static str)> {
        if keys.contains(&"table") {
            Vec::new()
        } else {
            vec![("table", "main.pipe_connection_test")]
        }
    }

    fn locate(&self, location: &str) -> Result<Arc<dyn Destination>> {
        let Some((path, table)) = location.rsplit_once('#') else {
            return Err(Error::user(format!(
                "`{location}`: give a DuckDB table as <database file>#<schema.table>"
            )));
        };
        let config: DuckDbConfig =
            serde_json::from_value(serde_json::json!({ "path": path, "table": table }))
                .map_err(|e| Error::internal(format!("default DuckDB settings: {e}")))?;
        Ok(Arc::new(DuckDbDestination::new(config)?))
    }
}

/// A DuckDB table as a destination.
#[derive(Debug)]
pub struct DuckDbDestination {
    config: DuckDbConfig,
    table: TableName,
}

impl DuckDbDestination {
    /// Validate `config`; opens nothing.
    pub fn new(config: DuckDbConfig) -> Result<Self> {
        let table = TableName::parse(&config.table)?;
        Ok(Self { config, table })
    }

    fn connection_options(&self) -> worker::ConnectionOptions {
        worker::ConnectionOptions {
            memory_limit_mb: self.config.memory_limit_mb,
            threads: self.config.threads,
            settings: self.config.settings.clone(),
        }
    }
}

#[async_trait]
impl Destination for DuckDbDestination {
    fn describe(&self) -> String {
        format!("duckdb {} {}", self.config.path.display(), self.table)
    }

    async fn check(&self) -> Result<()> {
        let path = self.config.path.clone();
        if !path.exists() {
            return pipe_framework::probe::creatable(&path, "DuckDB database");
        }
        let options = self.connection_options();
        tokio::task::spawn_blocking(move || {
            let read = database::read_connection(&path, &options)?;
            read.conn
                .execute_batch("SELECT 1")
                .map_err(|e| error::sql_err("querying the database", e))?;
            Ok::<_, DuckError>(())
        })
        .await
        .map_err(|e| Error::internal(format!("duckdb check task: {e}")))?
        .map_err(Error::from)
    }

    fn check_quarantine(&self, spec: &QuarantineSpec) -> Result<()> {
        quarantine::table_name(&self.table, spec.table.as_deref())
            .map(|_| ())
            .map_err(Error::from)
    }

    async fn committed_state(&self, ctx: &RunContext) -> Result<Option<State>> {
        let path = self.config.path.clone();
        if !path.exists() {
            return Ok(Some(State::new()));
        }
        let options = self.connection_options();
        let (pipeline, table) = (ctx.pipeline.clone(), self.table.key());
        tokio::task::spawn_blocking(move || {
            let read = database::read_connection(&path, &options)?;
            commit::committed_state(&read.conn, &pipeline, &table)
        })
        .await
        .map_err(|e| Error::internal(format!("duckdb state task: {e}")))?
        .map(Some)
        .map_err(Error::from)
    }

    fn many_writers(&self) -> Result<()> {
        Err(Error::user(format!(
            "{} is one DuckDB file, which one process at a time can write: work units cannot \
             be spread over worker processes; run `pipe backfill --parallel N` in one process \
             instead",
            self.describe()
        )))
    }

    fn operations(&self) -> Option<&dyn TableOperations> {
        Some(self)
    }

    async fn prepare(&self, request: PrepareRequest) -> Result<Box<dyn Sink>> {
        let job = worker::Job {
            path: self.config.path.clone(),
            table: self.table.clone(),
            connection: self.connection_options(),
            request,
        };
        let started = worker::spawn(job)
            .map_err(|e| Error::external(format!("cannot start the DuckDB thread: {e}")))?;
        let target = started
            .ready
            .await
            .map_err(|_| Error::internal("the DuckDB worker stopped while preparing"))??;
        Ok(Box::new(DuckDbSink::new(
            target,
            started.commands,
            started.thread,
        )))
    }
}

#[async_trait]
impl TableOperations for DuckDbDestination {
    async fn history(&self, limit: Option<usize>) -> Result<Vec<CommitInfo>> {
        operations::history(
            &self.config.path,
            &self.connection_options(),
            &self.table,
            limit,
        )
        .await
    }

    async fn inspect(&self, at: Option<&str>) -> Result<Option<TableInfo>> {
        operations::inspect(
            &self.config.path,
            &self.connection_options(),
            &self.table,
            at,
        )
        .await
    }
}
