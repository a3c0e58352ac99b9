//! The HTTP source: pages → records → Arrow batches, with an incremental cursor.

use std::sync::Arc;

use arrow_schema::{DataType, SchemaRef};
use arrow_select::coalesce::BatchCoalescer;
use async_trait::async_trait;
use pipe_framework::{
    BatchSender, Error, Result, RunContext, RunSlots, Source, SourceReport, State, Window,
};
use tokio::sync::mpsc;
use tracing::info;
use url::Url;

use crate::client::Client;
use crate::config::{HttpConfig, Method};
use crate::cursor::{self, Tracker};
use crate::decode::PageDecoder;
use crate::error::HttpError;
use crate::infer::{self, Inference};
use crate::pager::Pager;
use crate::scan;
use crate::walk::{Page, Records, Walker};

/// Placeholders a URL, parameter or body string may hold.
const CURSOR: &str = "{cursor}";
const WINDOW_START: &str = "{window_start}";
const WINDOW_END: &str = "{window_end}";

/// Reads a JSON API.
#[derive(Debug)]
pub struct HttpSource {
    config: HttpConfig,
    client: Arc<Client>,
    records: Records,
    /// Declared columns (`columns`): no inference.
    declared: Option<(SchemaRef, Vec<String>)>,
    /// `column_types` (`None`: JSON text).
    overrides: Vec<(String, Option<DataType>)>,
    /// The first pages of a run, fetched to infer its schema, handed to its read.
    prefetched: RunSlots<Prefetch>,
}

#[derive(Debug)]
struct Prefetch {
    schema: SchemaRef,
    json: Vec<String>,
    pages: Vec<Page>,
    walker: Walker,
}

/// A type name, or `None` for `json` (kept as JSON text).
fn column_type(name: &str, ty: &str) -> Result<Option<DataType>> {
    if ty.trim().eq_ignore_ascii_case("json") {
        return Ok(None);
    }
    pipe_framework::types::parse_type(ty)
        .map(Some)
        .map_err(|e| e.context(format!("the type of column `{name}`")))
}

/// The values of the placeholders in one run.
#[derive(Debug, Default)]
struct Values {
    cursor: Option<String>,
    window: Option<Window>,
}

impl Values {
    /// `text` with its placeholders filled; `None` when one has no value.
    fn fill(&self, text: &str) -> Option<String> {
        let mut out = text.to_string();
        for (placeholder, value) in [
            (CURSOR, self.cursor.as_deref()),
            (WINDOW_START, self.window.as_ref().map(|w| w.start.as_str())),
            (WINDOW_END, self.window.as_ref().map(|w| w.end.as_str())),
        ] {
            if out.contains(placeholder) {
                out = out.replace(placeholder, value?);
            }
        }
        Some(out)
    }

    /// The same values percent-encoded, for filling into a URL.
    fn encoded(&self) -> Values {
        Values {
            cursor: self.cursor.as_deref().map(percent_encode),
            window: self.window.as_ref().map(|w| Window {
                start: percent_encode(&w.start),
                end: percent_encode(&w.end),
            }),
        }
    }

    fn fill_json(&self, value: toml::Value) -> Option<serde_json::Value> {
        Some(match value {
            toml::Value::String(s) => serde_json::Value::String(self.fill(&s)?),
            toml::Value::Table(t) => serde_json::Value::Object(
                t.into_iter()
                    .filter_map(|(k, v)| Some((k, self.fill_json(v)?)))
                    .collect(),
            ),
            toml::Value::Array(items) => serde_json::Value::Array(
                items
                    .into_iter()
                    .filter_map(|v| self.fill_json(v))
                    .collect(),
            ),
            toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
            other => serde_json::to_value(other).ok()?,
        })
    }
}

/// Everything but RFC 3986's unreserved characters percent-encoded.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A backfill bound as APIs take it: `2024-01-01 06:00:00+00` (the SQL literal of a
/// timestamp window) → `2024-01-01T06:00:00Z`; dates and integers as they are.
fn iso(bound: &str) -> String {
    match chrono::NaiveDateTime::parse_from_str(bound, "%Y-%m-%d %H:%M:%S+00") {
        Ok(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => bound.to_string(),
    }
}

fn mentions(config: &HttpConfig, placeholder: &str) -> bool {
    config.url.contains(placeholder)
        || config.params.values().any(|v| v.contains(placeholder))
        || config
            .body
            .as_ref()
            .is_some_and(|b| b.to_string().contains(placeholder))
}

impl HttpSource {
    /// A source for `config` (validated; no I/O).
    pub fn new(config: HttpConfig) -> Result<Self> {
        Url::parse(&config.url.replace(['{', '}'], "")).map_err(|e| {
            Error::user(format!(
                "url `{}`: {e}",
                pipe_framework::secret::redact(&config.url)
            ))
        })?;
        if config.method == Method::Get && config.body.is_some() {
            return Err(Error::user("`body` is only sent with method = \"post\""));
        }
        if config.columns.is_some() && !config.column_types.is_empty() {
            return Err(Error::user(
                "give either `columns` (every column) or `column_types` (some inferred ones)",
            ));
        }
        if let crate::config::Pagination::Offset { limit: 0, .. } = config.pagination {
            return Err(Error::user("pagination.limit must be at least 1"));
        }
        if config.initial_value.is_some() && config.cursor.is_none() {
            return Err(Error::user("`initial_value` needs `cursor`"));
        }
        if mentions(&config, CURSOR) && config.cursor.is_none() {
            return Err(Error::user(
                "`{cursor}` is used but no `cursor` field is set: name the record field whose \
                 maximum the next run starts from",
            ));
        }
        let declared = match &config.columns {
            Some(columns) => {
                let typed = columns
                    .iter()
                    .map(|c| Ok((c.name.clone(), column_type(&c.name, &c.ty)?)))
                    .collect::<Result<Vec<_>>>()?;
                Some(infer::declared(&typed))
            }
            None => None,
        };
        let overrides = config
            .column_types
            .iter()
            .map(|(n, t)| Ok((n.clone(), column_type(n, t)?)))
            .collect::<Result<Vec<_>>>()?;
        let client = Arc::new(Client::new(&config)?);
        let records = Records {
            format: config.format,
            path: scan::parse_path(&config.records_path),
            path_text: config.records_path.clone(),
        };
        Ok(Self {
            config,
            client,
            records,
            declared,
            overrides,
            prefetched: RunSlots::default(),
        })
    }

    fn values(&self, committed: &State, window: Option<&Window>) -> Result<Values> {
        if let Some(window) = window {
            return Ok(Values {
                cursor: None,
                window: Some(Window {
                    start: iso(&window.start),
                    end: iso(&window.end),
                }),
            });
        }
        let cursor = match &self.config.cursor {
            Some(field) => match committed.get(&cursor::state_key(field)) {
                Some(json) => Some(
                    serde_json::from_str::<cursor::CursorState>(json)
                        .map_err(|e| {
                            Error::internal(format!("the committed cursor is unreadable: {e}"))
                        })?
                        .value,
                ),
                None => self.config.initial_value.clone(),
            },
            None => None,
        };
        Ok(Values {
            cursor,
            window: None,
        })
    }

    /// The walker of one run's pages.
    fn walker(&self, values: &Values) -> Result<Walker> {
        let url = values.encoded().fill(&self.config.url).ok_or_else(|| {
            Error::user(format!(
                "url `{}` needs a value its placeholder does not have yet (set initial_value, \
                 or move the placeholder into `params`, where it is left out)",
                self.client.redact(&self.config.url)
            ))
        })?;
        let mut url = Url::parse(&url)
            .map_err(|e| Error::user(format!("url `{}`: {e}", self.client.redact(&url))))?;
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in &self.config.params {
                if let Some(value) = values.fill(value) {
                    query.append_pair(name, &value);
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let body = self
            .config
            .body
            .clone()
            .and_then(|b| values.fill_json(toml::Value::Table(b)));
        Ok(Walker::new(
            self.client.clone(),
            body,
            self.records.clone(),
            Pager::new(self.config.pagination.clone(), url),
            self.config.max_pages,
            self.config.parallelism,
        ))
    }

    /// Fetch the pages the schema is inferred from (none with declared columns).
    async fn prefetch(&self, ctx: &RunContext) -> Result<Prefetch> {
        let values = self.values(&ctx.committed, ctx.window.as_ref())?;
        let mut walker = self.walker(&values)?;
        if let Some((schema, json)) = &self.declared {
            return Ok(Prefetch {
                schema: schema.clone(),
                json: json.clone(),
                pages: Vec::new(),
                walker,
            });
        }
        let mut inference = Inference::default();
        let mut pages = Vec::new();
        // Pages with no records tell nothing: the sample goes on until one has some.
        while pages.len() < self.config.infer_pages || inference.records == 0 {
            let Some(page) = walker.next_page(&ctx.cancel).await? else {
                break;
            };
            for (i, span) in page.records.iter().enumerate() {
                inference
                    .add(&page.body, *span)
                    .map_err(|e| page_error(&page, i, span.0, &e))?;
            }
            pages.push(page);
        }
        let sampled = inference.records;
        let (schema, mut json) = inference.finish();
        // No record at all: no columns (the table, if any, is left as it is; none is made).
        let schema = if sampled == 0 {
            schema
        } else {
            infer::apply_overrides(schema, &mut json, &self.overrides)
        };
        info!(
            pages = pages.len(),
            columns = schema.fields().len(),
            json_text = ?json,
            "inferred the schema of the API's records"
        );
        Ok(Prefetch {
            schema: Arc::new(schema),
            json,
            pages,
            walker,
        })
    }
}

impl HttpSource {
    /// [`HttpSource::prefetch`], with the cursor field checked before any data moves.
    async fn checked_prefetch(&self, ctx: &RunContext) -> Result<Prefetch> {
        let prefetch = tokio::select! {
            p = self.prefetch(ctx) => p?,
            () = ctx.cancel.cancelled() => return Err(Error::cancelled("the run was cancelled")),
        };
        if let Some(field) = &self.config.cursor
            && !prefetch.schema.fields().is_empty()
        {
            Tracker::new(&prefetch.schema, field, None, None).map_err(Error::user)?;
        }
        Ok(prefetch)
    }
}

fn page_error(page: &Page, record: usize, offset: usize, message: &str) -> Error {
    HttpError::Page {
        page: page.number,
        url: page.shown.clone(),
        message: format!("record {} at byte {offset}: {message}", record + 1),
    }
    .into()
}

#[async_trait]
impl Source for HttpSource {
    fn describe(&self) -> String {
        // The configured URL: placeholders unfilled, credentials (if any) redacted.
        match Url::parse(&self.config.url) {
            Ok(url) => format!("http {}", self.client.display(&url)),
            Err(_) => format!("http {}", pipe_framework::secret::redact(&self.config.url)),
        }
    }

    async fn schema(&self) -> Result<SchemaRef> {
        // `pipe check`: the first pages as a first run would fetch them, kept for no read.
        let prefetch = self.checked_prefetch(&RunContext::new("schema")).await?;
        Ok(prefetch.schema)
    }

    async fn run_schema(&self, ctx: &RunContext) -> Result<SchemaRef> {
        let prefetch = self.checked_prefetch(ctx).await?;
        let schema = prefetch.schema.clone();
        self.prefetched.put(&ctx.run_id, prefetch);
        Ok(schema)
    }

    fn is_incremental(&self) -> bool {
        self.config.cursor.is_some()
    }

    fn supports_windows(&self) -> bool {
        mentions(&self.config, WINDOW_START) || mentions(&self.config, WINDOW_END)
    }

    async fn read(&self, ctx: &RunContext, out: BatchSender) -> Result<SourceReport> {
        let prefetch = match self.prefetched.take(&ctx.run_id) {
            Some(p) => p,
            None => self.prefetch(ctx).await?,
        };
        let schema = out.schema().clone();
        if schema.fields() != prefetch.schema.fields() {
            return Err(Error::internal(
                "the HTTP source was asked for a schema other than the one it inferred",
            ));
        }
        let mut tracker = match (&self.config.cursor, &ctx.window) {
            (Some(field), None) => {
                let committed = ctx.committed.get(&cursor::state_key(field));
                Some(
                    Tracker::new(
                        &schema,
                        field,
                        committed.map(String::as_str),
                        self.config.initial_value.as_deref(),
                    )
                    .map_err(Error::user)?,
                )
            }
            _ => None,
        };
        let mut reading = Reading {
            decoder: PageDecoder::new(schema.clone(), prefetch.json.clone()),
            coalescer: BatchCoalescer::new(schema.clone(), self.config.batch_rows),
            tracker: tracker.as_mut(),
            out: &out,
            report: SourceReport::default(),
            records: 0,
        };
        for page in prefetch.pages {
            reading.page(page).await?;
        }
        let (tx, mut rx) = mpsc::channel(self.config.parallelism + 1);
        let mut fetcher = AbortOnDrop(tokio::spawn(prefetch.walker.run(tx, ctx.cancel.clone())));
        loop {
            let page = tokio::select! {
                page = rx.recv() => page,
                () = ctx.cancel.cancelled() => {
                    return Err(Error::cancelled("the run was cancelled"));
                }
            };
            match page {
                Some(page) => reading.page(page?).await?,
                None => break,
            }
        }
        // The channel also closes when the fetch task dies: only its clean end is the end.
        (&mut fetcher.0)
            .await
            .map_err(|e| Error::internal(format!("the HTTP fetch task failed: {e}")))?;
        reading.finish().await?;
        let mut report = reading.report;
        if let (Some(tracker), Some(field)) = (&tracker, &self.config.cursor) {
            if let Some(state) = tracker.finish()? {
                report.state.insert(cursor::state_key(field), state);
            }
            if tracker.nulls > 0 {
                report.warnings.push(format!(
                    "{} records have no `{field}` (null): loaded, but the cursor cannot track \
                     them",
                    tracker.nulls
                ));
            }
            info!(dropped = tracker.dropped, cursor_type = %tracker.data_type(), "cursor");
        }
        Ok(report)
    }
}

/// Aborts the fetch task when the read ends early.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One read's decoding state.
struct Reading<'a> {
    decoder: PageDecoder,
    coalescer: BatchCoalescer,
    tracker: Option<&'a mut Tracker>,
    out: &'a BatchSender,
    report: SourceReport,
    records: u64,
}

impl Reading<'_> {
    async fn page(&mut self, page: Page) -> Result<()> {
        self.report.parts += 1;
        self.report.bytes_read += page.body.len() as u64;
        self.records += page.records.len() as u64;
        let batch = self
            .decoder
            .decode(&page.body, &page.records)
            .map_err(|e| page_error(&page, e.record, e.offset, &e.message))?;
        let Some(mut batch) = batch else {
            return Ok(());
        };
        if let Some(tracker) = self.tracker.as_deref_mut() {
            let hash = |i: usize| {
                let (start, end) = page.records[i];
                xxhash_rust::xxh3::xxh3_64(&page.body[start..end])
            };
            batch = tracker.filter(batch, &hash)?;
        }
        self.coalescer.push_batch(batch)?;
        while let Some(batch) = self.coalescer.next_completed_batch() {
            self.out.send(batch).await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.coalescer.finish_buffered_batch()?;
        while let Some(batch) = self.coalescer.next_completed_batch() {
            self.out.send(batch).await?;
        }
        info!(
            pages = self.report.parts,
            records = self.records,
            "http read"
        );
        Ok(())
    }
}
