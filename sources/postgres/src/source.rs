//! The Postgres [`Source`]: describe, then binary `COPY` over one or more connections that
//! share one snapshot.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use async_trait::async_trait;
use futures::StreamExt;
use pipe_framework::{BatchSender, Error, Result, RunContext, Source, SourceReport};
use sqlx::Executor;
use sqlx::postgres::PgConnection;
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::catalog::{self, ident, literal};
use crate::config::{PostgresConfig, Unsupported};
use crate::connect::Endpoint;
use crate::decode::CopyDecoder;
use crate::error::PgError;
use crate::incremental::{CursorKind, CursorState, Tracker, state_key};
use crate::types::{PgColumn, PgKind, Unconstrained, field, kind_of};

/// Reads a PostgreSQL table or query; see [`PostgresConfig`].
#[derive(Debug)]
pub struct PostgresSource {
    config: PostgresConfig,
    endpoint: Endpoint,
    unconstrained: Unconstrained,
    plan: OnceCell<Arc<Plan>>,
}

/// What describing the source settled.
#[derive(Debug)]
struct Plan {
    schema: SchemaRef,
    kinds: Vec<PgKind>,
    /// The SELECT list (with `::text` casts for unsupported types read as text).
    projection: String,
    /// `FROM …`.
    from: String,
    /// The cursor column's index in the projection and its kind.
    cursor: Option<(usize, CursorKind)>,
}

/// One partition's outcome.
struct Part {
    tracker: Option<Tracker>,
    bytes: u64,
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
        if config.initial_value.is_some() && config.cursor.is_none() {
            return invalid("`initial_value` needs a `cursor`");
        }
        Ok(Self {
            config,
            endpoint,
            unconstrained,
            plan: OnceCell::new(),
        })
    }

    fn relation_sql(&self) -> String {
        match (&self.config.table, &self.config.query) {
            (Some(t), _) => format!("FROM {}", catalog::table_sql(t)),
            (_, Some(q)) => format!("FROM ({q}) AS pipe_q"),
            _ => String::new(),
        }
    }

    async fn plan(&self) -> Result<Arc<Plan>> {
        self.plan
            .get_or_try_init(|| async { self.describe().await.map(Arc::new) })
            .await
            .cloned()
    }

    async fn describe(&self) -> Result<Plan> {
        let mut conn = self.endpoint.connect().await?;
        let from = self.relation_sql();
        let list = match &self.config.columns {
            Some(cols) => cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "),
            None => "*".to_string(),
        };
        let described =
            catalog::describe(&mut conn, &self.endpoint, &format!("SELECT {list} {from}")).await?;
        let mut columns = Vec::with_capacity(described.len());
        for (name, type_name, info) in described {
            let kind = kind_of(&info, self.unconstrained).map_err(|m| PgError::Value {
                column: name.clone(),
                message: m,
            })?;
            let column = match (kind, self.config.unsupported_types) {
                (Some(kind), _) => PgColumn {
                    name,
                    kind,
                    as_text: false,
                },
                (None, Unsupported::Text) => PgColumn {
                    name,
                    kind: PgKind::Text,
                    as_text: true,
                },
                (None, Unsupported::Error) => {
                    return Err(PgError::Unsupported {
                        column: name,
                        pg_type: type_name,
                    }
                    .into());
                }
            };
            columns.push(column);
        }
        let cursor = match &self.config.cursor {
            None => None,
            Some(c) => {
                let (i, col) = columns
                    .iter()
                    .enumerate()
                    .find(|(_, col)| &col.name == c)
                    .ok_or_else(|| {
                        PgError::Config(format!(
                            "cursor column `{c}` is not one of the columns read"
                        ))
                    })?;
                Some((i, CursorKind::of(c, &col.kind)?))
            }
        };
        let projection = columns
            .iter()
            .map(|c| {
                if c.as_text {
                    format!("{0}::text AS {0}", ident(&c.name))
                } else {
                    ident(&c.name)
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| field(&c.name, &c.kind))
                .collect::<Vec<_>>(),
        ));
        info!(target = %self.endpoint.target(), columns = columns.len(), "postgres source described");
        let _ = sqlx::Connection::close(conn).await;
        Ok(Plan {
            schema,
            kinds: columns.into_iter().map(|c| c.kind).collect(),
            projection,
            from,
            cursor,
        })
    }

    /// `WHERE` conditions every partition shares: the user's filter and the cursor's start.
    fn conditions(&self, previous: Option<&CursorState>) -> Vec<String> {
        let mut conds = Vec::new();
        if let Some(w) = &self.config.filter {
            conds.push(format!("({w})"));
        }
        if let Some(c) = &self.config.cursor {
            let start = previous
                .map(|p| p.value.clone())
                .or_else(|| self.config.initial_value.clone());
            if let Some(v) = start {
                conds.push(format!("{} >= {}", ident(c), literal(&v)));
            }
        }
        conds
    }

    /// One condition per partition (`TRUE` when reading on one connection).
    async fn partitions(
        &self,
        conn: &mut PgConnection,
        plan: &Plan,
        shared: &[String],
    ) -> Result<Vec<String>> {
        let n = self.config.parallelism;
        if n <= 1 {
            return Ok(vec!["TRUE".into()]);
        }
        let column = match (&self.config.partition_column, &self.config.table) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(t)) => catalog::primary_key(conn, &self.endpoint, t).await?,
            (None, None) => None,
        };
        let integer = column.as_ref().and_then(|c| {
            let i = plan.schema.index_of(c).ok()?;
            matches!(plan.kinds[i], PgKind::Int2 | PgKind::Int4 | PgKind::Int8).then(|| c.clone())
        });
        if let Some(c) = integer {
            let from_where = format!("{} {}", plan.from, where_clause(shared, None));
            return Ok(
                match catalog::bounds(conn, &self.endpoint, &c, &from_where).await? {
                    Some((min, max)) => catalog::integer_ranges(&c, min, max, n),
                    None => vec!["TRUE".into()],
                },
            );
        }
        if let Some(c) = &self.config.partition_column {
            return Err(PgError::Config(format!(
                "`partition_column` `{c}` must be an integer column of the read"
            ))
            .into());
        }
        match &self.config.table {
            Some(t) => Ok(catalog::ctid_ranges(
                catalog::pages(conn, &self.endpoint, t).await?,
                n,
            )),
            None => Ok(vec!["TRUE".into()]),
        }
    }
}

fn where_clause(shared: &[String], partition: Option<&str>) -> String {
    let all: Vec<&str> = shared.iter().map(String::as_str).chain(partition).collect();
    if all.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", all.join(" AND "))
    }
}

async fn begin_snapshot(
    conn: &mut PgConnection,
    ep: &Endpoint,
    snapshot: Option<&str>,
) -> std::result::Result<(), PgError> {
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| ep.err("starting the read transaction", e))?;
    if let Some(id) = snapshot {
        conn.execute(format!("SET TRANSACTION SNAPSHOT {}", literal(id)).as_str())
            .await
            .map_err(|e| ep.err("joining the exported snapshot", e))?;
    }
    Ok(())
}

/// COPY one partition into `out`.
async fn copy_partition(
    conn: &mut PgConnection,
    ep: &Endpoint,
    plan: &Plan,
    sql: String,
    batch_rows: usize,
    mut tracker: Option<Tracker>,
    out: &BatchSender,
) -> Result<Part> {
    debug!(%sql, "copy");
    let mut decoder = CopyDecoder::new(plan.schema.clone(), &plan.kinds, batch_rows);
    let mut ready: Vec<RecordBatch> = Vec::new();
    {
        let mut stream = conn
            .copy_out_raw(&sql)
            .await
            .map_err(|e| ep.err("reading (COPY)", e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ep.err("reading (COPY)", e))?;
            decoder.feed(&chunk, &mut |b| {
                ready.push(b);
                Ok(())
            })?;
            for batch in ready.drain(..) {
                send(batch, &mut tracker, out).await?;
            }
        }
    }
    if let Some(batch) = decoder.finish()? {
        send(batch, &mut tracker, out).await?;
    }
    Ok(Part {
        tracker,
        bytes: decoder.bytes,
    })
}

async fn send(batch: RecordBatch, tracker: &mut Option<Tracker>, out: &BatchSender) -> Result<()> {
    let batch = match tracker {
        Some(t) => t.process(batch)?,
        None => batch,
    };
    out.send(batch).await
}

#[async_trait]
impl Source for PostgresSource {
    async fn schema(&self) -> Result<SchemaRef> {
        Ok(self.plan().await?.schema.clone())
    }

    fn is_incremental(&self) -> bool {
        self.config.cursor.is_some()
    }

    async fn read(&self, ctx: &RunContext, out: BatchSender) -> Result<SourceReport> {
        let plan = self.plan().await?;
        let key = self.config.cursor.as_deref().map(state_key);
        let previous: Option<CursorState> = match key.as_ref().and_then(|k| ctx.committed.get(k)) {
            Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                Error::internal(format!("the committed cursor state is not valid: {e}"))
            })?),
            None => None,
        };
        let shared = self.conditions(previous.as_ref());
        let tracker = |plan: &Plan| -> Result<Option<Tracker>> {
            Ok(match plan.cursor {
                Some((i, kind)) => Some(Tracker::new(i, kind, &plan.schema, previous.as_ref())?),
                None => None,
            })
        };
        let copy_sql = |partition: &str| {
            format!(
                "COPY (SELECT {} {} {}) TO STDOUT (FORMAT binary)",
                plan.projection,
                plan.from,
                where_clause(&shared, Some(partition))
            )
        };

        let ep = &self.endpoint;
        let mut conn = ep.connect().await?;
        begin_snapshot(&mut conn, ep, None).await?;
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
        let partitions = self.partitions(&mut conn, &plan, &shared).await?;
        info!(partitions = partitions.len(), cursor = ?previous.as_ref().map(|p| &p.value), "postgres read");

        // Every other partition on its own connection, in the same snapshot. The exporting
        // transaction stays open until all of them have joined it.
        let mut workers: JoinSet<Result<Part>> = JoinSet::new();
        let mut joined = Vec::new();
        for partition in partitions.iter().skip(1) {
            let (ep, plan, out, sql) = (ep.clone(), plan.clone(), out.clone(), copy_sql(partition));
            let (batch_rows, snapshot, tracker) =
                (self.config.batch_rows, snapshot.clone(), tracker(&plan)?);
            let (ready_tx, ready_rx) = oneshot::channel();
            joined.push(ready_rx);
            workers.spawn(async move {
                let mut conn = ep.connect().await?;
                let joined = begin_snapshot(&mut conn, &ep, snapshot.as_deref()).await;
                let _ = ready_tx.send(());
                joined?;
                let part =
                    copy_partition(&mut conn, &ep, &plan, sql, batch_rows, tracker, &out).await?;
                let _ = conn.execute("COMMIT").await;
                Ok(part)
            });
        }
        for ready in joined {
            let _ = ready.await;
        }
        let first = copy_partition(
            &mut conn,
            ep,
            &plan,
            copy_sql(&partitions[0]),
            self.config.batch_rows,
            tracker(&plan)?,
            &out,
        )
        .await;
        let mut parts = vec![first];
        while let Some(done) = workers.join_next().await {
            parts.push(
                done.map_err(|e| Error::internal(format!("a postgres reader task failed: {e}")))?,
            );
        }
        drop(out);
        // The first failure is the error; the connection (maybe mid-COPY) is just dropped.
        let parts = parts.into_iter().collect::<Result<Vec<Part>>>()?;
        conn.execute("COMMIT")
            .await
            .map_err(|e| ep.err("ending the read transaction", e))?;

        let mut report = SourceReport::default();
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
}
