//! One run's staged writes: data files are written as batches arrive (merge: rows are
//! spooled), and the commit adds one snapshot carrying the run's state, retried on the new
//! table state when another writer got there first. On any failure every file this run
//! wrote is deleted and the table stays at its previous snapshot.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use iceberg::spec::{DataFile, Schema};
use pipe_framework::{
    CommitReport, CommitRequest, Error, ExistingFile, Registration, SchemaEvolution, Sink,
    WriteMode,
};
use tracing::{info, warn};

use crate::catalog::{CommitTarget, Loaded};
use crate::commit::{Committed, Removal, SnapshotChange, commit_once, live};
use crate::error::{IcebergError, Result};
use crate::merge::MergeState;
use crate::parallel::ParallelWriter;
use crate::register;
use crate::table::{PIPELINE_KEY, Planned, RUN_KEY, STATE_PREFIX, committed_state};
use crate::write::WrittenFiles;
use futures::TryStreamExt;
use pipe_framework::cluster::ExternalSort;
use pipe_framework::committed::state_to_commit;

/// How the sink commits.
#[derive(Debug, Clone)]
pub(crate) struct SinkOptions {
    /// The write mode.
    pub mode: WriteMode,
    /// `replace_partitions`.
    pub replace_partitions: bool,
    /// Retries after losing a commit race.
    pub retries: u32,
    /// Field ids of the merge keys.
    pub key_field_ids: Vec<i32>,
    /// `mode = "register"`: how to plan the table again when registered files bring new
    /// columns.
    pub replan: Option<Replan>,
}

/// What planning the table needs (`crate::table::plan`).
#[derive(Debug, Clone)]
pub(crate) struct Replan {
    pub config: crate::config::IcebergConfig,
    pub policy: SchemaEvolution,
}

/// Where the run's rows go until the commit.
#[derive(Debug)]
pub(crate) struct Writing {
    /// The data file writers.
    pub writer: ParallelWriter,
    /// A merge's staged rows (written at commit).
    pub merge: Option<MergeState>,
    /// Clustered appends and replaces: the rows, sorted at commit.
    pub sorter: Option<ExternalSort>,
}

/// The Iceberg [`Sink`].
pub struct IcebergSink {
    target: Arc<dyn CommitTarget>,
    planned: Planned,
    schema: Schema,
    write_schema: SchemaRef,
    writer: Option<ParallelWriter>,
    merge: Option<MergeState>,
    sorter: Option<ExternalSort>,
    written: WrittenFiles,
    options: SinkOptions,
    /// `mode = "register"`: the files to add, and their rows.
    registered: Vec<DataFile>,
    registered_rows: u64,
}

impl std::fmt::Debug for IcebergSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcebergSink")
            .field("mode", &self.options.mode)
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl IcebergSink {
    pub(crate) fn new(
        target: Arc<dyn CommitTarget>,
        planned: Planned,
        write_schema: SchemaRef,
        writing: Writing,
        written: WrittenFiles,
        options: SinkOptions,
    ) -> Self {
        let schema = planned.schema();
        Self {
            target,
            planned,
            schema,
            write_schema,
            writer: Some(writing.writer),
            merge: writing.merge,
            sorter: writing.sorter,
            written,
            options,
            registered: Vec::new(),
            registered_rows: 0,
        }
    }

    /// Stage the files of `listed` the table does not reference yet (see `crate::register`);
    /// returns their rows.
    async fn register_files(&mut self, listed: Vec<ExistingFile>) -> Result<Registration> {
        let io = self.target.file_io().clone();
        let registered = live_paths(&io, &self.planned).await?;
        let listed_count = listed.len();
        let mut candidates = register::new_files(&io, listed, &registered).await?;
        info!(
            listed = listed_count,
            new = candidates.len(),
            "files to register"
        );
        if candidates.is_empty() {
            return Ok(Registration::default());
        }
        let arrow = crate::schema::write_schema(&self.schema)?;
        let extra = register::check_columns(&candidates, &self.schema, &arrow)?;
        if let Some(replan) = &self.options.replan
            && !extra.is_empty()
            && replan.policy != SchemaEvolution::DiscardColumns
        {
            let union = register::with_columns(&arrow, &extra);
            self.planned =
                crate::table::plan(self.target.as_ref(), &replan.config, &union, replan.policy)
                    .await?;
            self.schema = self.planned.schema();
            // Planned again on the table as it is now: another run may have registered
            // some of the files meanwhile.
            let now = live_paths(&io, &self.planned).await?;
            candidates.retain(|c| !now.contains(&c.file.location));
        }
        let spec = self.planned.metadata().default_partition_spec().clone();
        self.registered = register::data_files(&candidates, &self.schema, &spec)?;
        self.registered_rows = candidates.iter().map(register::Candidate::rows).sum();
        Ok(Registration {
            rows: self.registered_rows,
            files: candidates.into_iter().map(|c| c.file).collect(),
        })
    }

    async fn stage_and_commit(
        &mut self,
        req: &CommitRequest,
        report: &mut CommitReport,
    ) -> Result<Committed> {
        let io = self.target.file_io().clone();
        let evolved = match &self.planned {
            Planned::Existing { schema, .. } => schema.as_deref().cloned(),
            Planned::New { .. } => None,
        };
        let mut base: Option<Loaded> = match &self.planned {
            Planned::Existing { base, .. } => Some(base.clone()),
            Planned::New { .. } => None,
        };
        let mut removal = match self.options.mode {
            WriteMode::Append => Removal::None,
            WriteMode::Replace => Removal::All,
            WriteMode::Merge => Removal::Files(HashSet::new()),
            WriteMode::Register => Removal::None,
        };
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| IcebergError::Internal("the run was committed twice".into()))?;
        let mut live_at_plan: HashSet<String> = HashSet::new();
        if self.merge.is_some() {
            let staged = self
                .stage_merge(&io, base.as_ref(), &mut writer, report)
                .await;
            match staged {
                Ok((rewritten, live)) => {
                    removal = Removal::Files(rewritten);
                    live_at_plan = live;
                }
                Err(e) => {
                    // Stop the writer tasks before the caller deletes their files.
                    let _ = writer.close().await;
                    return Err(e);
                }
            }
        }
        if let Some(sorter) = self.sorter.take()
            && let Err(e) = drain(sorter, &mut writer).await
        {
            let _ = writer.close().await;
            return Err(e);
        }
        let rows_written = writer.rows();
        let mut added = writer.close().await?;
        if self.options.mode != WriteMode::Merge {
            report.rows_inserted = rows_written;
        }
        if self.options.mode == WriteMode::Register {
            added.extend(self.registered.iter().cloned());
            report.rows_inserted = self.registered_rows;
        }
        if self.options.mode == WriteMode::Replace && self.options.replace_partitions {
            removal = Removal::Partitions(added.iter().map(|f| f.partition().clone()).collect());
        }
        let change = SnapshotChange {
            added,
            removal,
            schema: evolved.clone(),
            properties: Vec::new(),
            rewrite: false,
            name_mapping: self.options.mode == WriteMode::Register,
        };
        let base = match base.take() {
            Some(b) => b,
            None => {
                let created = create(&self.target, &self.planned).await?;
                // Another writer's first run may have created it, with data, meanwhile.
                if created.metadata.current_snapshot().is_some() {
                    let id = created.metadata.current_schema_id();
                    validate_retry(
                        &self.target,
                        &self.options,
                        self.merge.as_ref(),
                        &created,
                        (id, created.metadata.default_partition_spec_id()),
                        &live_at_plan,
                    )
                    .await?;
                    if self.options.mode == WriteMode::Register {
                        not_registered_meanwhile(self.target.as_ref(), &created, &self.registered)
                            .await?;
                    }
                }
                created
            }
        };
        self.commit_with_retries(req, base, change, &live_at_plan)
            .await
    }

    /// Commit `change` on `base`; after losing a race, validate it against the new table
    /// state and try again (up to `commit_retries` times).
    async fn commit_with_retries(
        &self,
        req: &CommitRequest,
        mut base: Loaded,
        mut change: SnapshotChange,
        live_at_plan: &HashSet<String>,
    ) -> Result<Committed> {
        let planned = (
            base.metadata.current_schema_id(),
            base.metadata.default_partition_spec_id(),
        );
        let mut attempt = 0;
        loop {
            // The pipeline's state as the table holds it now: another run of the pipeline (a
            // sibling backfill window, a run on another host) may have committed since this
            // run read it.
            change.properties = summary_properties(req, &base)?;
            if let Some(done) = commit_once(self.target.as_ref(), &base, &change).await? {
                return Ok(done);
            }
            attempt += 1;
            if attempt > self.options.retries {
                return Err(IcebergError::Conflict(format!(
                    "gave up after {attempt} attempts: other writers kept committing to the \
                     table first; nothing was committed, run again"
                )));
            }
            warn!(
                attempt,
                "another writer committed first; restaging on the new table state"
            );
            base = self.target.load().await?.ok_or_else(|| {
                IcebergError::Conflict("the table was dropped while this run wrote it".into())
            })?;
            if self.options.mode == WriteMode::Register {
                not_registered_meanwhile(self.target.as_ref(), &base, &self.registered).await?;
            }
            validate_retry(
                &self.target,
                &self.options,
                self.merge.as_ref(),
                &base,
                planned,
                live_at_plan,
            )
            .await?;
        }
    }
}

impl IcebergSink {
    /// A merge's rewrites and incoming rows into `writer`: the files it replaces, and the
    /// live files it planned on (to validate a retry against).
    async fn stage_merge(
        &mut self,
        io: &iceberg::io::FileIO,
        base: Option<&Loaded>,
        writer: &mut ParallelWriter,
        report: &mut CommitReport,
    ) -> Result<(HashSet<String>, HashSet<String>)> {
        let Some(merge) = &mut self.merge else {
            return Err(IcebergError::Internal("merge without merge state".into()));
        };
        let live = match base {
            Some(b) => live::live_data_files(io, &b.metadata).await?,
            None => Vec::new(),
        };
        let live_at_plan = live
            .iter()
            .map(|f| f.entry.file_path().to_string())
            .collect();
        let outcome = merge
            .finish(io, &self.schema, &self.options.key_field_ids, &live, writer)
            .await?;
        info!(
            scanned = outcome.scanned,
            rewritten = outcome.rewritten.len(),
            live = live.len(),
            "merge: data files read and rewritten"
        );
        report.rows_updated = outcome.updated;
        report.rows_inserted = outcome.inserted;
        Ok((outcome.rewritten, live_at_plan))
    }
}

/// Every row `sorter` holds, in key order, into `writer`.
async fn drain(sorter: ExternalSort, writer: &mut ParallelWriter) -> Result<()> {
    let spilled = sorter.spilled_runs();
    let mut sorted = sorter.finish().await?;
    while let Some(batch) = sorted.try_next().await? {
        writer.write(batch).await?;
    }
    info!(spilled, "clustered rows written");
    Ok(())
}

/// The `pipe.*` summary properties of this run's snapshot on `base`: who wrote it and the
/// pipeline's whole state after it ([`state_to_commit`]).
fn summary_properties(req: &CommitRequest, base: &Loaded) -> Result<Vec<(String, String)>> {
    let current = committed_state(&base.metadata, &req.ctx.pipeline);
    let state = state_to_commit(&req.ctx, &current, &req.state)?;
    let mut properties = vec![
        (PIPELINE_KEY.to_string(), req.ctx.pipeline.clone()),
        (RUN_KEY.to_string(), req.ctx.run_id.clone()),
    ];
    properties.extend(
        state
            .into_iter()
            .map(|(k, v)| (format!("{STATE_PREFIX}{k}"), v)),
    );
    Ok(properties)
}

/// Whether a change staged on an older state still applies to `base`.
async fn validate_retry(
    target: &Arc<dyn CommitTarget>,
    options: &SinkOptions,
    merge: Option<&MergeState>,
    base: &Loaded,
    (planned_schema_id, planned_spec_id): (i32, i32),
    live_at_plan: &HashSet<String>,
) -> Result<()> {
    if base.metadata.default_partition_spec_id() != planned_spec_id {
        return Err(IcebergError::Conflict(
            "another writer changed the table's partition spec while this run wrote it; \
             nothing was committed, run again"
                .into(),
        ));
    }
    if base.metadata.current_schema_id() != planned_schema_id {
        return Err(IcebergError::Conflict(
            "another writer changed the table's schema while this run wrote it; nothing \
             was committed, run again"
                .into(),
        ));
    }
    if options.mode != WriteMode::Merge {
        return Ok(());
    }
    // A merge is still valid if the files it rewrote are live (checked while staging) and no
    // file added meanwhile can hold one of its keys.
    let Some(&key_id) = options.key_field_ids.first() else {
        return Ok(());
    };
    for file in live::live_data_files(target.file_io(), &base.metadata).await? {
        let path = file.entry.file_path();
        if live_at_plan.contains(path) {
            continue;
        }
        if merge.is_none_or(|m| m.may_match(&file, key_id)) {
            return Err(IcebergError::Conflict(format!(
                "another writer added data file {path}, which may hold keys this merge \
                 updates; nothing was committed, run again"
            )));
        }
    }
    Ok(())
}

/// The paths of the planned table's live data files (none for a table not created yet).
async fn live_paths(io: &iceberg::io::FileIO, planned: &Planned) -> Result<HashSet<String>> {
    Ok(match planned {
        Planned::Existing { base, .. } => live::live_data_files(io, &base.metadata)
            .await?
            .iter()
            .map(|f| f.entry.file_path().to_string())
            .collect(),
        Planned::New { .. } => HashSet::new(),
    })
}

/// Refuse to register files another writer registered while this run planned.
async fn not_registered_meanwhile(
    target: &dyn CommitTarget,
    base: &Loaded,
    files: &[DataFile],
) -> Result<()> {
    let ours: HashSet<&str> = files.iter().map(DataFile::file_path).collect();
    for live in live::live_data_files(target.file_io(), &base.metadata).await? {
        let path = live.entry.file_path();
        if ours.contains(path) {
            return Err(IcebergError::Conflict(format!(
                "another run registered {path} while this one planned; nothing was \
                 committed, run again"
            )));
        }
    }
    Ok(())
}

/// Create the table the first run planned, checking the catalog built the same schema.
async fn create(target: &Arc<dyn CommitTarget>, planned: &Planned) -> Result<Loaded> {
    let Planned::New { creation, metadata } = planned else {
        return Err(IcebergError::Internal("no table to create".into()));
    };
    let created = target.create(creation.creation()).await?;
    if created.metadata.current_schema() != metadata.current_schema()
        || created.metadata.default_partition_spec() != metadata.default_partition_spec()
    {
        return Err(IcebergError::Conflict(
            "the table was created with a different schema or partition spec than this run \
             wrote (another writer created it first?); nothing was committed, run again"
                .into(),
        ));
    }
    Ok(created)
}

#[async_trait]
impl Sink for IcebergSink {
    fn schema(&self) -> SchemaRef {
        self.write_schema.clone()
    }

    async fn write(&mut self, batch: RecordBatch) -> pipe_framework::Result<()> {
        if self.options.mode == WriteMode::Register {
            // The registered files' rows, after a contract checked them: they stay where
            // they are.
            return Ok(());
        }
        let result = match (&mut self.merge, &mut self.sorter, &mut self.writer) {
            (Some(merge), _, _) => merge.write(&batch),
            (None, Some(sorter), _) => sorter.push(batch).map_err(IcebergError::from),
            (None, None, Some(writer)) => writer.write(batch).await,
            (None, None, None) => Err(IcebergError::Internal("write after commit".into())),
        };
        result.map_err(Error::from)
    }

    async fn commit(
        mut self: Box<Self>,
        req: CommitRequest,
    ) -> pipe_framework::Result<CommitReport> {
        let mut report = CommitReport::default();
        match self.stage_and_commit(&req, &mut report).await {
            Ok(done) => {
                self.written.forget_all();
                report.rows_deleted = if self.options.mode == WriteMode::Replace {
                    done.removed_rows
                } else {
                    0
                };
                report.commit_id = Some(done.snapshot_id.to_string());
                info!(
                    snapshot = done.snapshot_id,
                    metadata = %done.table.location,
                    "snapshot committed"
                );
                Ok(report)
            }
            Err(e @ IcebergError::CommitUnknown { .. }) => {
                warn!("the commit's outcome is unknown; keeping this run's files");
                Err(e.into())
            }
            Err(e) => {
                let deleted = self.written.delete_all(self.target.file_io()).await;
                warn!(deleted, "commit failed; deleted this run's files");
                Err(e.into())
            }
        }
    }

    async fn register(&mut self, files: Vec<ExistingFile>) -> pipe_framework::Result<Registration> {
        self.register_files(files).await.map_err(Error::from)
    }

    async fn abort(mut self: Box<Self>) -> pipe_framework::Result<()> {
        // Let the writer tasks stop before their files are deleted.
        if let Some(writer) = self.writer.take() {
            let _ = writer.close().await;
        }
        let deleted = self.written.delete_all(self.target.file_io()).await;
        info!(deleted, "run aborted; deleted its data files");
        Ok(())
    }
}
