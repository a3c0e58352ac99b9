//! # pipe-source-postgres
//!
//! `type = "postgres"`: reads a table or query with `COPY … TO STDOUT (FORMAT binary)` and
//! decodes the stream straight into Arrow builders — no text parsing, no per-row structs. With
//! `parallelism = N` it splits the read into N ranges read over N connections that share one
//! exported snapshot (one consistent point in time). With `cursor` it reads incrementally and
//! returns the new high-water mark, which the runtime commits with the data.

mod catalog;
mod config;
mod connect;
mod copy;
mod decode;
mod error;
mod incremental;
mod numeric;
mod plan;
mod source;
mod types;

use std::sync::Arc;

use pipe_framework::{BuildContext, Result, Source, SourceFactory};

pub use config::{PostgresConfig, Unsupported};
pub use error::PgError;
pub use source::PostgresSource;

/// Registers as `type = "postgres"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresFactory;

impl SourceFactory for PostgresFactory {
    type Config = PostgresConfig;

    fn description(&self) -> &'static str {
        "PostgreSQL table or query: binary COPY into Arrow, parallel snapshot reads, incremental cursor"
    }

    fn build(&self, config: PostgresConfig, _ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(PostgresSource::new(config)?))
    }

    /// A connection without a table is tested with a trivial query.
    fn probe(&self, keys: &[&str]) -> Vec<(&'static str, &'static str)> {
        if keys.contains(&"table") || keys.contains(&"query") {
            Vec::new()
        } else {
            vec![("query", "SELECT 1 AS reachable")]
        }
    }
}
