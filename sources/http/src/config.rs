//! The `[source]` table of `type = "http"` (documented key by key in docs/http-source.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use pipe_framework::Secret;
use serde::Deserialize;

/// Reads records from a JSON API, page by page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The first page's URL. May hold `{cursor}`, `{window_start}` and `{window_end}`.
    pub url: String,
    /// `get` (default) or `post`.
    #[serde(default)]
    pub method: Method,
    /// The JSON body of a `post` (a TOML table); string values may hold the placeholders.
    #[serde(default)]
    pub body: Option<toml::Table>,
    /// Query parameters added to every request. Values may hold `{cursor}` (the committed
    /// cursor value, or `initial_value`), `{window_start}`, `{window_end}`; a parameter whose
    /// placeholder has no value (`{cursor}` on a first run without `initial_value`) is left out.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Request headers. Values are secrets: never printed.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Authentication (default none).
    #[serde(default)]
    pub auth: Option<Auth>,
    /// How the next page is found (default: one request, no pages).
    #[serde(default)]
    pub pagination: Pagination,
    /// Where the record array is in a JSON body: a JSON pointer (`/data/items`) or a dotted
    /// path (`data.items`); empty (default) for a body that is the array itself.
    #[serde(default)]
    pub records_path: String,
    /// `json` (default: one JSON document per page) or `ndjson` (one record per line).
    #[serde(default)]
    pub format: BodyFormat,
    /// The columns and their types, in order (`[{ name = "id", type = "int64" }, ...]`; the
    /// type `json` keeps a value as its JSON text). Default: inferred from the first
    /// `infer_pages` pages.
    #[serde(default)]
    pub columns: Option<Vec<ColumnSpec>>,
    /// Types for some inferred columns by name (`{ updated_at = "timestamptz" }`, or `json`).
    #[serde(default)]
    pub column_types: BTreeMap<String, String>,
    /// Pages whose records the schema is inferred from (default 1). Their bodies are kept
    /// in memory until they are decoded. A field first seen on a later page is an error.
    #[serde(
        default = "one",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 10_000>"
    )]
    pub infer_pages: usize,
    /// Rows per Arrow batch handed downstream (default 16384).
    #[serde(
        default = "default_batch_rows",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 1_048_576>"
    )]
    pub batch_rows: usize,
    /// Seconds before a request (connect, send, whole body) times out (default 30).
    #[serde(
        default = "default_timeout",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 3600>"
    )]
    pub timeout_secs: u64,
    /// At most this many requests per second across the run (default: no limit).
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Stop after this many pages (default: no limit).
    #[serde(default)]
    pub max_pages: Option<u64>,
    /// Retries of a request that failed with 429, 5xx, a timeout or a connection error
    /// (default 5), with exponential backoff and jitter from `retry_backoff_ms` (default 500),
    /// honouring `Retry-After`.
    #[serde(
        default = "default_retries",
        deserialize_with = "pipe_framework::config::within::<_, _, 0, 100>"
    )]
    pub max_retries: u32,
    /// The first retry's delay in milliseconds; doubled on each retry, at most 30 s.
    #[serde(
        default = "default_backoff",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 600_000>"
    )]
    pub retry_backoff_ms: u64,
    /// Pages fetched at once when the pagination knows the total (`page_number` with
    /// `total_pages_path`, `offset` with `total_path`); batches keep page order (default 1).
    #[serde(
        default = "one",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 64>"
    )]
    pub parallelism: usize,
    /// A PEM file of CA certificates trusted besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Incremental loads: a field of the records (`updated_at`, an id) whose maximum is
    /// committed with the data and sent back through `{cursor}` on the next run.
    #[serde(default)]
    pub cursor: Option<String>,
    /// `{cursor}` on the first incremental run (default: parameters using it are left out).
    #[serde(default)]
    pub initial_value: Option<String>,
}

/// The HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `GET`.
    #[default]
    Get,
    /// `POST` with the JSON `body`.
    Post,
}

/// How a page's body holds its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// One JSON document; the records are the array at `records_path`.
    #[default]
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// One declared column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The field name in the records.
    pub name: String,
    /// Its type (`int64`, `string`, `timestamptz`, `decimal(18,2)`, `json`, ...).
    #[serde(rename = "type")]
    pub ty: String,
}

/// Authentication of every request.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// A key in a header or a query parameter.
    ApiKey {
        /// The header or parameter name (`X-API-Key`, `api_key`).
        name: String,
        /// The key.
        value: Secret,
        /// `header` (default) or `query`.
        #[serde(default, rename = "in")]
        location: KeyLocation,
    },
    /// OAuth2 client credentials: a token from `token_url`, refreshed before it expires and
    /// when a request answers 401.
    #[serde(rename = "oauth2")]
    OAuth2 {
        /// The token endpoint.
        token_url: String,
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
        /// Scopes requested (default none).
        #[serde(default)]
        scopes: Vec<String>,
    },
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    /// A request header.
    #[default]
    Header,
    /// A query parameter.
    Query,
}

/// How the next page is found.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One request.
    #[default]
    None,
    /// `?page=1`, `?page=2`, ... until an empty page or `total_pages_path`'s count.
    PageNumber {
        /// The page parameter (default `page`).
        #[serde(default = "page_param")]
        param: String,
        /// The first page's number (default 1).
        #[serde(default = "one_u64")]
        start: u64,
        /// A page-size parameter to send (e.g. `per_page`), with `page_size`.
        #[serde(default)]
        page_size_param: Option<String>,
        /// The page size to ask for.
        #[serde(default)]
        page_size: Option<u64>,
        /// Where the body says how many pages there are (enables `parallelism`).
        #[serde(default)]
        total_pages_path: Option<String>,
    },
    /// `?offset=0&limit=100`, `?offset=100&limit=100`, ... until an empty page, a page with
    /// fewer than `limit` records, or `total_path`'s count.
    Offset {
        /// The offset parameter (default `offset`).
        #[serde(default = "offset_param")]
        offset_param: String,
        /// The limit parameter (default `limit`).
        #[serde(default = "limit_param")]
        limit_param: String,
        /// Records per page.
        limit: u64,
        /// Where the body says how many records there are (enables `parallelism`).
        #[serde(default)]
        total_path: Option<String>,
    },
    /// A token in the body (`/meta/next_cursor`) sent back as a parameter; stops when it is
    /// missing, null or empty.
    Cursor {
        /// Where the token is in the body.
        cursor_path: String,
        /// The parameter it is sent as.
        cursor_param: String,
    },
    /// The `Link: <...>; rel="next"` response header (GitHub style).
    LinkHeader,
    /// The next page's URL in the body (`/next`, `links.next`); relative URLs resolve
    /// against the current page's.
    NextUrl {
        /// Where the URL is in the body.
        next_url_path: String,
    },
}

fn one() -> usize {
    1
}

fn one_u64() -> u64 {
    1
}

fn page_param() -> String {
    "page".to_string()
}

fn offset_param() -> String {
    "offset".to_string()
}

fn limit_param() -> String {
    "limit".to_string()
}

fn default_batch_rows() -> usize {
    16_384
}

fn default_timeout() -> u64 {
    30
}

fn default_retries() -> u32 {
    5
}

fn default_backoff() -> u64 {
    500
}
