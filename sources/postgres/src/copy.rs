//! Reading partitions with `COPY … TO STDOUT (FORMAT binary)`: the first on the connection
//! that exported the snapshot, every other on its own connection joined to that snapshot, so
//! all of them see one consistent state of the table.

use arrow_array::RecordBatch;
use futures::StreamExt;
use pipe_framework::{BatchSender, Error, Result};
use sqlx::Executor;
use sqlx::postgres::PgConnection;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::catalog::literal;
use crate::connect::Endpoint;
use crate::decode::CopyDecoder;
use crate::error::PgError;
use crate::incremental::Tracker;
use crate::plan::Plan;

/// One partition's outcome.
pub(crate) struct Part {
    pub tracker: Option<Tracker>,
    pub bytes: u64,
}

/// One partition to read: its `COPY` statement, and the tracker of its cursor values.
pub(crate) struct Partition {
    pub sql: String,
    pub tracker: Option<Tracker>,
}

/// What every partition's reader shares.
pub(crate) struct Reader<'a> {
    pub ep: &'a Endpoint,
    pub plan: &'a std::sync::Arc<Plan>,
    pub batch_rows: usize,
    /// The snapshot the first connection exported (parallel reads).
    pub snapshot: Option<String>,
}

impl Reader<'_> {
    /// Read every partition into `out`: the first on `first` (in its open transaction), the
    /// others each on its own connection in the same snapshot. The exporting transaction
    /// stays open until all of them have joined it; the first failure stops every partition.
    pub(crate) async fn copy_all(
        &self,
        mut first: PgConnection,
        copies: Vec<Partition>,
        out: BatchSender,
    ) -> Result<Vec<Part>> {
        let mut copies = copies.into_iter();
        let Some(head) = copies.next() else {
            return Ok(Vec::new());
        };
        let mut tasks: JoinSet<Result<Part>> = JoinSet::new();
        let mut joined = Vec::new();
        for copy in copies {
            let (ep, plan, out) = (self.ep.clone(), self.plan.clone(), out.clone());
            let (batch_rows, snapshot) = (self.batch_rows, self.snapshot.clone());
            let (ready_tx, ready_rx) = oneshot::channel();
            joined.push(ready_rx);
            tasks.spawn(async move {
                let mut conn = ep.connect().await?;
                let joined = begin_snapshot(&mut conn, &ep, snapshot.as_deref()).await;
                let _ = ready_tx.send(());
                joined?;
                let part = copy_partition(&mut conn, &ep, &plan, copy, batch_rows, &out).await?;
                let _ = conn.execute("COMMIT").await;
                Ok(part)
            });
        }
        for ready in joined {
            let _ = ready.await;
        }
        let (ep, plan, batch_rows) = (self.ep.clone(), self.plan.clone(), self.batch_rows);
        tasks.spawn(async move {
            let part = copy_partition(&mut first, &ep, &plan, head, batch_rows, &out).await;
            // Read-only: ending it can only fail if the server dropped an idle session,
            // which changes nothing about what was read.
            if let Err(e) = first.execute("COMMIT").await {
                warn!(error = %e, "ending the read transaction");
            }
            part
        });
        let mut parts = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(part)) => parts.push(part),
                Ok(Err(e)) => {
                    tasks.abort_all();
                    return Err(e);
                }
                Err(e) => {
                    tasks.abort_all();
                    return Err(Error::internal(format!(
                        "a postgres reader task failed: {e}"
                    )));
                }
            }
        }
        Ok(parts)
    }
}

/// Start a repeatable-read, read-only transaction (in `snapshot`, if given).
pub(crate) async fn begin_snapshot(
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
    copy: Partition,
    batch_rows: usize,
    out: &BatchSender,
) -> Result<Part> {
    let Partition { sql, mut tracker } = copy;
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
