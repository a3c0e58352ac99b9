//! # pipe-source-http
//!
//! `type = "http"`: reads records from a JSON API page by page (page numbers, offsets,
//! cursor tokens, `Link` headers, next URLs), with bearer, basic, API-key and OAuth2
//! client-credentials authentication, rate limits and retries. Record arrays are located
//! with a byte scanner and decoded straight into Arrow by arrow-json against a declared or
//! inferred schema; with `cursor`, the maximum of a record field is committed with the data
//! and sent back on the next run. Documented in docs/http-source.md.

mod client;
mod config;
mod cursor;
mod decode;
mod error;
mod infer;
mod pager;
mod scan;
mod source;
mod walk;

use std::sync::Arc;

use pipe_framework::{BuildContext, Result, Source, SourceFactory};

pub use config::{Auth, BodyFormat, ColumnSpec, HttpConfig, KeyLocation, Method, Pagination};
pub use error::HttpError;
pub use source::HttpSource;

/// Registers as `type = "http"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpFactory;

impl SourceFactory for HttpFactory {
    type Config = HttpConfig;

    fn description(&self) -> &'static str {
        "JSON API over HTTP: pagination, auth (bearer, basic, API key, OAuth2), retries, incremental cursor"
    }

    fn build(&self, config: HttpConfig, _ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(HttpSource::new(config)?))
    }
}
