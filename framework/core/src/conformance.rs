//! The source conformance check: what every [`Source`] must do, checked on a real instance.
//! A connector's tests call [`check_source`] (see docs/custom-sources.md):
//!
//! 1. [`Source::schema`] answers, and every batch [`Source::read`] sends has that schema;
//! 2. a full read ends (returns `Ok`) with every batch received;
//! 3. a read whose run is cancelled after its first batch (its token fires and its output
//!    channel closes, as in the runtime) returns within a deadline — `Ok` or a [`ErrorKind::Cancelled`] error, never a hang;
//! 4. a failing read fails with a typed error that is not [`ErrorKind::Internal`].

use std::sync::Arc;
use std::time::Duration;

use arrow_schema::SchemaRef;

use crate::channel::batch_channel;
use crate::context::RunContext;
use crate::error::{Error, ErrorKind, Result};
use crate::source::{Source, SourceReport};

/// What [`check_source`] saw.
#[derive(Debug, Clone)]
pub struct Conformance {
    /// The schema the source declared.
    pub schema: SchemaRef,
    /// Rows of the full read.
    pub rows: u64,
    /// Batches of the full read.
    pub batches: u64,
    /// What the full read reported.
    pub report: SourceReport,
    /// How long the cancelled read took to return after the cancellation.
    pub cancelled_in: Duration,
}

fn broken(what: impl Into<String>) -> Error {
    Error::internal(format!("source conformance: {}", what.into()))
}

/// Check `source` (see the module docs). `make_ctx` gives a fresh run context per read
/// (state, window); `deadline` bounds the cancelled read. A check that fails is an
/// [`ErrorKind::Internal`] error saying which rule broke; a read that fails with a
/// non-internal error is returned as that error (rule 4 holds).
pub async fn check_source(
    source: Arc<dyn Source>,
    make_ctx: impl Fn() -> RunContext,
    deadline: Duration,
) -> Result<Conformance> {
    let ctx = make_ctx();
    let schema = source.run_schema(&ctx).await?;
    let (tx, mut rx) = batch_channel(schema.clone(), 4);
    let reading = {
        let source = source.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move { source.read(&ctx, tx).await })
    };
    let (mut rows, mut batches) = (0u64, 0u64);
    // The runtime sends the end marker; here the sender simply goes away (an error).
    while let Ok(Some(batch)) = rx.recv().await {
        if batch.schema_ref().fields() != schema.fields() {
            return Err(broken("a batch's schema differs from the declared one"));
        }
        rows += batch.num_rows() as u64;
        batches += 1;
    }
    let report = reading
        .await
        .map_err(|e| broken(format!("the read panicked: {e}")))?
        .map_err(|e| {
            if e.kind() == ErrorKind::Internal {
                broken(format!("the read failed with an internal error: {e}"))
            } else {
                e
            }
        })?;
    let cancelled_in = check_cancellation(&source, make_ctx(), deadline).await?;
    Ok(Conformance {
        schema,
        rows,
        batches,
        report,
        cancelled_in,
    })
}

/// Cancel a read after its first batch, drain nothing more, and time its return.
async fn check_cancellation(
    source: &Arc<dyn Source>,
    ctx: RunContext,
    deadline: Duration,
) -> Result<Duration> {
    let schema = source.run_schema(&ctx).await?;
    let (tx, mut rx) = batch_channel(schema, 1);
    let cancel = ctx.cancel.clone();
    let reading = {
        let source = source.clone();
        tokio::spawn(async move { source.read(&ctx, tx).await })
    };
    // The first batch (or the end), then cancel while the source may be blocked sending.
    let _ = tokio::time::timeout(deadline, rx.recv()).await;
    // As the runtime does: the run's token fires and the downstream stage goes away.
    let started = std::time::Instant::now();
    cancel.cancel();
    drop(rx);
    let outcome = tokio::time::timeout(deadline, reading).await;
    match outcome {
        Err(_) => Err(broken(format!(
            "a cancelled read did not return within {deadline:?}"
        ))),
        Ok(Err(e)) => Err(broken(format!("the cancelled read panicked: {e}"))),
        Ok(Ok(Ok(_))) => Ok(started.elapsed()),
        Ok(Ok(Err(e))) if e.kind() == ErrorKind::Cancelled => Ok(started.elapsed()),
        Ok(Ok(Err(e))) => Err(broken(format!(
            "a cancelled read failed with a {} instead of stopping: {e}",
            e.kind()
        ))),
    }
}
