//! The Postgres [`Source`]: describe, then binary `COPY` over one or more connections that
//! share one snapshot.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use futures::StreamExt;
use pipe_framework::{BatchSender, Error, Result, RunContext, Source, SourceReport, WriteMode};
use sqlx::postgres::PgConnection;
use tokio::sync::OnceCell;
use tracing::{debug, info};

use crate::catalog::literal;
use crate::config::{NullCursor, PostgresConfig};
use crate::connect::Endpoint;
use crate::copy::{Part, Partition, Reader, begin_snapshot};
use crate::decode::CopyDecoder;
use crate::error::PgError;
use crate::incremental::{CursorState, Digest, MAX_BOUNDARY_ROWS, Tracker, state_key};
use crate::plan::{self, Plan, where_clause};
use crate::types::Unconstrained;

/// Reads a PostgreSQL table or query; see [`PostgresConfig`].
#[derive(Debug)]
pub struct PostgresSource {
    config: PostgresConfig,
    endpoint: Endpoint,
    unconstrained: Unconstrained,
    plan: OnceCell<Arc<Plan>>,
}

impl PostgresSource {
    /// A source for `config`; nothing is opened until [`Source::schema`].
    pub fn new(config: PostgresConfig) -> Result<Self> {
        let endpoint = Endpoint::parse(&config.url, config.connect_timeout_secs)?;
        let unconstrained = Unconstrained::parse(&config.unconstrained_numeric)?;
        let invalid = |m: &str| Err(PgError::Config(m.to_string()).into());
        match (&config.table, &config.query) {
            (Some(_), Some(_)) => return invalid("give `table` or `query`, not both"),
            (None, None) => return invalid("give `table` (schema.table) or `query` (a SELECT)"),
            _ => {}
        }
        if config.batch_rows == 0 || config.parallelism == 0 {
            return invalid("`batch_rows` and `parallelism` must be at least 1");
        }
        if config.query.is_some() && config.parallelism > 1 && config.partition_column.is_none() {
            return invalid(
                "a `query` read in parallel needs `partition_column` (an integer column)",
            );
        }
        let cursor_only = [
            ("initial_value", config.initial_value.is_some()),
            ("end_value", config.end_value.is_some()),
            ("lookback", config.lookback.is_some()),
        ];
        if let Some((key, _)) = cursor_only.iter().find(|(_, set)| *set)
            && config.cursor.is_none()
        {
            return invalid(&format!("`{key}` needs a `cursor`"));
        }
        Ok(Self {
            config,
            endpoint,
            unconstrained,
            plan: OnceCell::new(),
        })
    }

    async fn plan(&self) -> Result<Arc<Plan>> {
        self.plan
            .get_or_try_init(|| async {
                let mut conn = self.endpoint.connect().await?;
                let plan = plan::describe(&mut conn, &self.endpoint, &self.config, self.unconstrained).await?;
                info!(target = %self.endpoint.target(), columns = plan.schema.fields().len(), "postgres source described");
                let _ = sqlx::Connection::close(conn).await;
                Ok::<_, Error>(Arc::new(plan))
            })
            .await
            .cloned()
    }
}

impl PostgresSource {
    /// Whether the rows at the committed position `previous` (kept as a digest) are exactly
    /// those loaded: then the read continues after it. If they changed, a merge reads them
    /// again (it deduplicates); an append cannot tell the new ones and stops.
    async fn boundary_unchanged(
        &self,
        conn: &mut PgConnection,
        plan: &Plan,
        previous: &CursorState,
        ctx: &RunContext,
    ) -> Result<bool> {
        let (Some((column, kind)), Some(cursor), Some(expected)) =
            (plan.cursor, &self.config.cursor, previous.digest)
        else {
            return Ok(false);
        };
        let mut conditions = vec![format!(
            "{} = {}",
            crate::catalog::ident(cursor),
            literal(&previous.value)
        )];
        if let Some(w) = &self.config.filter {
            conditions.push(format!("({w}\n)"));
        }
        let sql = format!(
            "COPY (SELECT {} {} WHERE {}) TO STDOUT (FORMAT binary)",
            plan.projection,
            plan.from,
            conditions.join(" AND ")
        );
        let hasher = Tracker::new(column, kind, &plan.schema, plan.key.as_deref(), None)?;
        let mut digest = Digest::default();
        let mut decoder =
            CopyDecoder::new(plan.schema.clone(), &plan.kinds, self.config.batch_rows);
        let mut failed: Option<PgError> = None;
        {
            let mut stream = conn.copy_out_raw(&sql).await.map_err(|e| {
                self.endpoint
                    .err("reading the rows at the cursor (COPY)", e)
            })?;
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| self.endpoint.err("reading the rows at the cursor", e))?;
                decoder.feed(&chunk, &mut |b| {
                    if let Err(e) = hasher.digest_of(&b, &mut digest) {
                        failed.get_or_insert(e);
                    }
                    Ok(())
                })?;
            }
        }
        if let Some(b) = decoder.finish()? {
            hasher.digest_of(&b, &mut digest)?;
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        if digest == expected {
            debug!(rows = digest.rows, "the rows at the cursor are unchanged");
            return Ok(true);
        }
        if ctx.mode == WriteMode::Merge {
            info!(
                before = expected.rows,
                now = digest.rows,
                "the rows at the cursor changed; the merge reads them all again"
            );
            return Ok(false);
        }
        Err(PgError::Config(format!(
            "the {} rows at cursor value {} changed since the last run ({} rows there now: rows \
             added, changed or deleted at exactly that value); with more than {} rows at one \
             value pipe keeps a digest and cannot tell which are new in mode = \"append\": \
             use mode = \"merge\", or a cursor with fewer ties",
            expected.rows, previous.value, digest.rows, MAX_BOUNDARY_ROWS
        ))
        .into())
    }

    /// Under `null_cursor = "warn"`/`"error"`: rows whose cursor is NULL (in the read's
    /// snapshot, under the configured `where`), as a warning, or an error.
    async fn null_cursors(
        &self,
        conn: &mut PgConnection,
        plan: &Plan,
        cursor: &str,
    ) -> Result<Option<String>> {
        if self.config.null_cursor == NullCursor::Ignore {
            return Ok(None);
        }
        let mut conditions = vec![format!("{} IS NULL", crate::catalog::ident(cursor))];
        if let Some(w) = &self.config.filter {
            conditions.push(format!("({w}\n)"));
        }
        let sql = format!(
            "SELECT count(*) {} WHERE {}",
            plan.from,
            conditions.join(" AND ")
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.endpoint.err("counting rows with a NULL cursor", e))?;
        if n == 0 {
            return Ok(None);
        }
        let message = format!(
            "{n} rows have a NULL `{cursor}`: incremental runs (`{cursor} >= …`) never read \
             them; fill the column, or set null_cursor = \"ignore\" to stop counting"
        );
        if self.config.null_cursor == NullCursor::Error {
            return Err(PgError::Config(message).into());
        }
        Ok(Some(message))
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn describe(&self) -> String {
        match (&self.config.table, &self.config.query) {
            (Some(table), _) => format!("postgres table {table} ({})", self.endpoint.target()),
            _ => format!("postgres query ({})", self.endpoint.target()),
        }
    }

    async fn schema(&self) -> Result<SchemaRef> {
        Ok(self.plan().await?.schema.clone())
    }

    fn is_incremental(&self) -> bool {
        self.config.cursor.is_some()
    }

    fn rereads_rows(&self) -> bool {
        self.config.lookback.is_some()
    }

    fn supports_windows(&self) -> bool {
        self.config.cursor.is_some()
    }

    async fn read(&self, ctx: &RunContext, out: BatchSender) -> Result<SourceReport> {
        // Every error names the table (or query) and the server it came from.
        self.read_all(ctx, out)
            .await
            .map_err(|e| e.context(format!("reading {}", self.describe())))
    }
}

impl PostgresSource {
    async fn read_all(&self, ctx: &RunContext, out: BatchSender) -> Result<SourceReport> {
        let plan = self.plan().await?;
        let window = ctx.window.as_ref();
        let key = self.config.cursor.as_deref().map(state_key);
        let previous = self.previous_position(ctx, key.as_deref())?;
        let kind = plan.cursor.map(|(_, k)| k);
        // A backfill window neither uses nor moves the incremental position.
        let tracker = |plan: &Plan| -> Result<Option<Tracker>> {
            Ok(match (plan.cursor, window) {
                (Some((i, kind)), None) => Some(Tracker::new(
                    i,
                    kind,
                    &plan.schema,
                    plan.key.as_deref(),
                    previous.as_ref(),
                )?),
                _ => None,
            })
        };
        let ep = &self.endpoint;
        let mut conn = ep.connect().await?;
        begin_snapshot(&mut conn, ep, None).await?;
        // Many rows at the committed position are kept as a digest: check, in this snapshot,
        // whether they are still exactly those.
        let past_boundary = match (&previous, window, &self.config.lookback) {
            (Some(p), None, None) if p.digest.is_some() => {
                self.boundary_unchanged(&mut conn, &plan, p, ctx).await?
            }
            _ => false,
        };
        let shared = plan::conditions(&self.config, kind, previous.as_ref(), window, past_boundary);
        let snapshot: Option<String> = if self.config.parallelism > 1 {
            Some(
                sqlx::query_scalar("SELECT pg_export_snapshot()")
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| ep.err("exporting the snapshot", e))?,
            )
        } else {
            None
        };
        let partitions = plan::partitions(&mut conn, ep, &self.config, &plan, &shared).await?;
        // `cursor >= v` never reaches a NULL cursor: say how many rows that leaves behind.
        let excludes_nulls = previous.is_some() || self.config.initial_value.is_some();
        let null_warning = match (&self.config.cursor, window) {
            (Some(cursor), None) if excludes_nulls => {
                self.null_cursors(&mut conn, &plan, cursor).await?
            }
            _ => None,
        };
        info!(partitions = partitions.len(), cursor = ?previous.as_ref().map(|p| &p.value), window = ?window, "postgres read");
        let copies = partitions
            .iter()
            .map(|partition| {
                let sql = format!(
                    "COPY (SELECT {} {} {}) TO STDOUT (FORMAT binary)",
                    plan.projection,
                    plan.from,
                    where_clause(&shared, Some(partition))
                );
                Ok(Partition {
                    sql,
                    tracker: tracker(&plan)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let reader = Reader {
            ep,
            plan: &plan,
            batch_rows: self.config.batch_rows,
            snapshot,
        };
        let parts = reader.copy_all(conn, copies, out).await?;
        summarize(parts, null_warning, key)
    }

    /// The position the last committed run reached (`None`: there is none yet).
    fn previous_position(
        &self,
        ctx: &RunContext,
        key: Option<&str>,
    ) -> Result<Option<CursorState>> {
        let previous: Option<CursorState> = match key.and_then(|k| ctx.committed.get(k)) {
            Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                Error::internal(format!("the committed cursor state is not valid: {e}"))
            })?),
            None => None,
        };
        if previous.is_none()
            && ctx.window.is_none()
            && self.config.initial_value.is_none()
            && ctx.committed.keys().any(|k| k.starts_with("backfill."))
        {
            return Err(PgError::Config(
                "this pipeline has backfilled windows but no incremental position yet: set \
                 `initial_value` to where the backfill ended, so the first incremental run \
                 does not load those rows again"
                    .into(),
            )
            .into());
        }
        Ok(previous)
    }
}

/// The run's report: bytes and partitions read, warnings, and the new position (the
/// partitions' trackers merged).
fn summarize(
    parts: Vec<Part>,
    warning: Option<String>,
    key: Option<String>,
) -> Result<SourceReport> {
    let mut report = SourceReport::default();
    report.warnings.extend(warning);
    let mut merged: Option<Tracker> = None;
    for part in parts {
        report.bytes_read += part.bytes;
        report.parts += 1;
        if let Some(t) = part.tracker {
            match &mut merged {
                Some(m) => m.merge(t),
                None => merged = Some(t),
            }
        }
    }
    if let (Some(key), Some(state)) = (key, merged.and_then(Tracker::state)) {
        let json = serde_json::to_string(&state).map_err(|e| Error::internal(e.to_string()))?;
        report.state.insert(key, json);
    }
    Ok(report)
}
