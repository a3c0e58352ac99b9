//! Running a pipeline file for real: the state store, the lease, the ledger, retries.
//!
//! A [`Session`] holds a pipeline's lease for as long as it lives (one `pipe run`, a whole
//! backfill, one scheduled run), so two runners never run the same pipeline at once. Each
//! [`Session::run`] loads the pipeline file afresh (new stages, new connections), records the
//! run in the ledger, runs it, and on a transient external failure retries it with exponential
//! backoff and jitter — safe, because a failed run commits nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ConfigFile;
use crate::context::{RunContext, State, Window};
use crate::destination::Destination;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Pipeline, RuntimeConfig};
use crate::registry::Registry;
use crate::runtime::{self, RunResult};
use crate::state::{Lease, LedgerStatus, StateStore};
use crate::summary::{RunProgress, RunStatus};

/// A pipeline's lease and state store, for one or more runs.
#[derive(Debug)]
pub struct Session {
    file: PathBuf,
    /// The pipeline's text when it does not come from `file` (`pipe load`).
    text: Option<ConfigFile>,
    registry: Registry,
    name: String,
    store: StateStore,
    lease: Option<Lease>,
}

impl Session {
    /// Load `file` (to check it and learn its name and state store), open the store and take
    /// the pipeline's lease. Errors clearly if another runner holds it.
    pub async fn open(file: &Path, registry: &Registry) -> Result<Self> {
        Self::open_config(ConfigFile::read(file)?, registry, false).await
    }

    /// [`Session::open`] for a worker (`pipe worker`): many processes share the pipeline, so
    /// it takes no pipeline lease; each work unit has its own (`StateStore::claim_unit`).
    pub async fn open_shared(file: &Path, registry: &Registry) -> Result<Self> {
        Self::open_with(ConfigFile::read(file)?, registry, false, false).await
    }

    /// [`Session::open`] for a pipeline given as text (`pipe load` builds one from URIs):
    /// each run builds it from `config` again; `in_memory` keeps it from being re-read from
    /// its path.
    pub async fn open_config(
        config: ConfigFile,
        registry: &Registry,
        in_memory: bool,
    ) -> Result<Self> {
        Self::open_with(config, registry, in_memory, true).await
    }

    async fn open_with(
        config: ConfigFile,
        registry: &Registry,
        in_memory: bool,
        leased: bool,
    ) -> Result<Self> {
        let file = config.path().to_path_buf();
        let pipeline = Pipeline::from_file(&config, registry)?;
        let store = StateStore::open(&pipeline.state).await?;
        let lease = match leased {
            true => Some(store.lease(&pipeline.name).await?),
            false => None,
        };
        let session = Self {
            file,
            text: in_memory.then_some(config),
            registry: registry.clone(),
            name: pipeline.name.clone(),
            store,
            lease,
        };
        let destination = pipeline.destination.clone();
        // The destination may be busy (another process holds a DuckDB file, a catalog is
        // restarting): reconciling is retried like a run.
        let mut delays = backoff(&pipeline.runtime);
        drop(pipeline);
        loop {
            let Err(e) = session.reconcile(destination.as_ref()).await else {
                return Ok(session);
            };
            match delays.next().filter(|_| transient(&e)) {
                Some(delay) => {
                    warn!(pipeline = %session.name, ?delay, error = ?e, "destination busy; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    let _ = session.close().await;
                    return Err(e);
                }
            }
        }
    }

    /// After a crash between a destination's commit and the ledger update, the destination
    /// knows better: its committed state is mirrored into the store, and the runs it names
    /// (the last run, backfill windows) are marked committed.
    async fn reconcile(&self, destination: &dyn Destination) -> Result<()> {
        let ctx = RunContext::new(self.name.clone());
        let Some(truth) = destination.committed_state(&ctx).await? else {
            return Ok(());
        };
        let mirror = self.store.state(&self.name).await?;
        let stale: State = truth
            .iter()
            .filter(|(k, v)| mirror.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !stale.is_empty() {
            self.store
                .put_state(&self.name, "reconciled", &stale)
                .await?;
            info!(pipeline = %self.name, keys = stale.len(), "state mirror reconciled with the destination");
        }
        // Runs the destination says committed are committed, whatever the ledger recorded
        // (a crash can fall between the commit and the ledger update).
        let runs = truth
            .iter()
            .filter(|(k, _)| k.as_str() == runtime::LAST_RUN_KEY || k.starts_with("backfill."))
            .map(|(_, v)| v);
        for run_id in runs {
            self.store.mark_committed(run_id).await?;
        }
        Ok(())
    }

    /// The pipeline, built afresh.
    pub fn load(&self) -> Result<Pipeline> {
        match &self.text {
            Some(config) => Pipeline::from_file(config, &self.registry),
            None => Pipeline::load(&self.file, &self.registry),
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state store.
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// The committed state: the destination's where it keeps one, else the store's.
    pub async fn committed_state(&self) -> Result<State> {
        committed_state(&self.load()?, &self.store).await
    }

    /// Run the pipeline once (or one backfill `window`), retrying transient failures.
    /// `cancel` stops it (nothing is committed then); so does losing the lease.
    pub async fn run(
        &self,
        window: Option<Window>,
        cancel: &CancellationToken,
        progress: Arc<RunProgress>,
    ) -> Result<RunResult> {
        let lost = self.lease.as_ref().map(Lease::lost).unwrap_or_default();
        let run_cancel = cancel.child_token();
        let link = {
            let (lost, run_cancel) = (lost.clone(), run_cancel.clone());
            tokio::spawn(async move {
                lost.cancelled().await;
                run_cancel.cancel();
            })
        };
        let result = self.run_with_retries(window, &run_cancel, progress).await;
        link.abort();
        result
    }

    async fn run_with_retries(
        &self,
        window: Option<Window>,
        cancel: &CancellationToken,
        progress: Arc<RunProgress>,
    ) -> Result<RunResult> {
        let first = self.load()?;
        let mut delays = backoff(&first.runtime);
        let mut pipeline = Some(first);
        loop {
            let p = match pipeline.take() {
                Some(p) => p,
                None => self.load()?,
            };
            let result = self
                .run_once(p, window.clone(), cancel, progress.clone())
                .await?;
            let retryable = result
                .error
                .as_ref()
                .is_some_and(|e| transient(e) && !cancel.is_cancelled());
            if !retryable {
                return Ok(result);
            }
            let Some(delay) = delays.next() else {
                return Ok(result);
            };
            warn!(pipeline = %self.name, ?delay, error = ?result.error, "transient failure; retrying");
            tokio::select! {
                () = cancel.cancelled() => return Ok(result),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn run_once(
        &self,
        pipeline: Pipeline,
        window: Option<Window>,
        cancel: &CancellationToken,
        progress: Arc<RunProgress>,
    ) -> Result<RunResult> {
        let mut ctx = RunContext::new(self.name.clone());
        ctx.cancel = cancel.child_token();
        // For destinations that cannot keep state, the store's is the committed one.
        ctx.committed = Arc::new(self.store.state(&self.name).await?);
        let kind = if window.is_some() { "backfill" } else { "run" };
        let bounds = window.as_ref().map(|w| (w.start.as_str(), w.end.as_str()));
        // With the pipeline's lease, runs still marked `running` belonged to a runner that
        // died. Workers share a pipeline without it: their units' leases settle that.
        if self.lease.is_some() {
            self.store.abandon_dead_runs(&self.name).await?;
        }
        self.store
            .start_run(&self.name, &ctx.run_id, kind, bounds)
            .await?;
        ctx.window = window;
        let run_id = ctx.run_id.clone();
        progress.reset();
        let result = runtime::run(pipeline, ctx, progress).await;
        let s = &result.summary;
        let status = match s.status {
            RunStatus::Succeeded => LedgerStatus::Committed,
            RunStatus::Failed => LedgerStatus::Failed,
            RunStatus::Cancelled => LedgerStatus::Cancelled,
            RunStatus::Unknown => LedgerStatus::Unknown,
        };
        let error = result.error.as_ref().map(|e| e.chain().join(": "));
        // The data is committed (or not) whatever happens to the store now: failing to record
        // it must not turn a committed run into a failed one. Reconciliation at the next start
        // repairs the store from the destination.
        let recorded = async {
            if status == LedgerStatus::Committed {
                // A mirror for `pipe status` (the only copy for destinations without state).
                self.store
                    .put_state(&self.name, &run_id, &result.committed)
                    .await?;
            }
            self.store
                .finish_run(
                    &run_id,
                    status,
                    s.rows_read,
                    s.rows_written,
                    error.as_deref(),
                )
                .await
        }
        .await;
        match recorded {
            Ok(()) => info!(pipeline = %self.name, %run_id, status = ?status, "run recorded"),
            Err(e) => warn!(pipeline = %self.name, %run_id, error = ?e,
                "the run could not be recorded in the state store; it is repaired at the next start"),
        }
        Ok(result)
    }

    /// Release the lease.
    pub async fn close(mut self) -> Result<()> {
        match self.lease.take() {
            Some(lease) => lease.release().await,
            None => Ok(()),
        }
    }
}

/// `pipeline`'s committed state: its destination's where it keeps one, else `store`'s.
pub async fn committed_state(pipeline: &Pipeline, store: &StateStore) -> Result<State> {
    let ctx = RunContext::new(pipeline.name.clone());
    match pipeline.destination.committed_state(&ctx).await? {
        Some(state) => Ok(state),
        None => store.state(&pipeline.name).await,
    }
}

/// The delays between attempts `runtime` asks for: exponential from `retry_backoff_ms`, with
/// jitter, at most a minute, `retries` of them.
fn backoff(runtime: &RuntimeConfig) -> impl Iterator<Item = Duration> + use<> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(runtime.retry_backoff_ms.max(1)))
        .with_max_delay(Duration::from_secs(60))
        .with_max_times(runtime.retries)
        .with_jitter()
        .build()
}

/// Whether trying again can succeed: an external failure marked retryable.
fn transient(e: &Error) -> bool {
    e.kind() == ErrorKind::External && e.is_retryable()
}
