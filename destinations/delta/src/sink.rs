//! One run's staged writes: data files are written as batches arrive (merge: rows are
//! spooled), and the commit adds one Delta version carrying the run's `txn` and state. On any
//! failure every file this run wrote is deleted and the log is untouched.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use deltalake::kernel::Remove;
use deltalake::logstore::ObjectStoreRef;
use futures::TryStreamExt;
use pipe_framework::{CommitReport, CommitRequest, Error, Sink, WriteMode};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::commit::{Change, Operation, RunInfo, Target, commit};
use crate::error::{DeltaError, Result, data};
use crate::merge::MergeState;
use crate::ops::Maintenance;
use crate::predicate::Predicate;
use crate::read::{self, LiveFile};
use crate::store::Written;
use crate::table::{self, Location};
use crate::write::ParallelWriter;
use pipe_framework::cluster::ExternalSort;
use pipe_framework::committed::state_to_commit;

/// The parts of a sink decided in the metadata stage.
#[derive(Debug)]
pub(crate) struct SinkParts {
    /// The table's Arrow schema (what the sink receives).
    pub schema: SchemaRef,
    /// Partition columns.
    pub partition_columns: Vec<String>,
    /// The recording store the writers write through.
    pub store: ObjectStoreRef,
    /// What they wrote.
    pub written: Written,
    /// The write mode.
    pub mode: WriteMode,
    /// Merge staging, for `merge`.
    pub merge: Option<MergeState>,
    /// `replace_where`, for `replace`.
    pub replace_where: Option<Predicate>,
    /// Merge keys (for the history).
    pub merge_keys: Vec<String>,
    /// The run's sequence number (`txn` version).
    pub seq: i64,
    /// Commit retries.
    pub retries: usize,
    /// Post-commit maintenance.
    pub maintenance: Maintenance,
    /// The table (to check, after a failed commit, whether it landed anyway).
    pub location: Location,
}

impl DeltaSink {
    /// A failed run: delete every file it wrote; the error to report.
    async fn discard(&mut self, e: DeltaError) -> Error {
        let deleted = self
            .parts
            .written
            .delete_all(self.parts.store.as_ref())
            .await;
        warn!(deleted, "commit failed; deleted this run's files");
        e.into()
    }
}

/// The Delta [`Sink`].
#[derive(Debug)]
pub struct DeltaSink {
    parts: SinkParts,
    /// Where the commit goes; taken by the commit.
    target: Option<Target>,
    /// The data file writers; taken by the commit.
    writer: Option<ParallelWriter>,
    /// Clustered appends and replaces: the rows, sorted at commit.
    sorter: Option<ExternalSort>,
    rows: u64,
    /// What the commit reports, filled while it is staged.
    report: CommitReport,
}

impl DeltaSink {
    pub(crate) fn new(
        parts: SinkParts,
        target: Target,
        writer: ParallelWriter,
        sorter: Option<ExternalSort>,
    ) -> Self {
        Self {
            parts,
            target: Some(target),
            writer: Some(writer),
            sorter,
            rows: 0,
            report: CommitReport::default(),
        }
    }
    /// Everything before the commit: the removals, the rewritten and new files (with their
    /// statistics) and the run's identity and state. Nothing is in the log yet.
    async fn stage_all(&mut self, req: &CommitRequest) -> Result<(Target, Change, RunInfo)> {
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| DeltaError::Internal("the run was committed twice".into()))?;
        let mut metrics = serde_json::Map::new();
        let staged = match self.sorter.take() {
            Some(sorter) => drain(sorter, &mut writer).await,
            None => Ok(()),
        };
        let staged = match staged {
            Ok(()) => self.stage(&mut writer, &mut metrics).await,
            Err(e) => Err(e),
        };
        let (removes, operation) = match staged {
            Ok(staged) => staged,
            Err(e) => {
                // Stop the writers before the caller deletes their files.
                let _ = writer.close().await;
                return Err(e);
            }
        };
        let adds = writer.close().await?;
        if self.parts.mode != WriteMode::Merge {
            self.report.rows_inserted = self.rows;
            metrics.insert("numOutputRows".into(), json!(self.rows));
        }
        metrics.insert("numAddedFiles".into(), json!(adds.len()));
        metrics.insert("numRemovedFiles".into(), json!(removes.len()));
        let target = self
            .target
            .take()
            .ok_or_else(|| DeltaError::Internal("the run was committed twice".into()))?;
        // The pipeline's state as the table holds it at the version this run commits on.
        let current = match &target {
            Target::Existing { table, .. } => {
                table::committed_state(table, &req.ctx.pipeline).await?.0
            }
            Target::New { .. } => pipe_framework::State::new(),
        };
        let state = state_to_commit(&req.ctx, &current, &req.state)?;
        let run = RunInfo {
            pipeline: req.ctx.pipeline.clone(),
            run_id: req.ctx.run_id.clone(),
            seq: self.parts.seq,
            state,
            retries: self.parts.retries,
        };
        let change = Change {
            adds,
            removes,
            operation,
            metrics,
        };
        Ok((target, change, run))
    }

    /// The removals of `replace` and `merge` (whose rewritten and incoming rows go to
    /// `writer`), and the operation for the history.
    async fn stage(
        &mut self,
        writer: &mut ParallelWriter,
        metrics: &mut serde_json::Map<String, Value>,
    ) -> Result<(Vec<Remove>, Operation)> {
        let report = &mut self.report;
        Ok(match self.parts.mode {
            WriteMode::Append => (Vec::new(), Operation::Append),
            // The factory does not offer it: the pipeline is refused before a run.
            WriteMode::Register => {
                return Err(DeltaError::Config(
                    "Delta tables do not support mode = \"register\" yet".into(),
                ));
            }
            WriteMode::Replace => {
                let (removes, deleted, copied) =
                    replace(live_files(self.target.as_ref())?, &self.parts, writer).await?;
                report.rows_deleted = deleted;
                metrics.insert("numDeletedRows".into(), json!(deleted));
                metrics.insert("numCopiedRows".into(), json!(copied));
                let predicate = self.parts.replace_where.as_ref().map(|p| p.sql.clone());
                (removes, Operation::Overwrite(predicate))
            }
            WriteMode::Merge => {
                let live = live_files(self.target.as_ref())?;
                for file in &live {
                    refuse_deletion_vectors(file, "merge")?;
                }
                let merge = self
                    .parts
                    .merge
                    .as_mut()
                    .ok_or_else(|| DeltaError::Internal("merge without merge state".into()))?;
                let outcome = merge
                    .finish(
                        &self.parts.store,
                        &live,
                        &self.parts.partition_columns,
                        writer,
                    )
                    .await?;
                report.rows_updated = outcome.updated;
                report.rows_inserted = outcome.inserted;
                metrics.insert("numTargetRowsUpdated".into(), json!(outcome.updated));
                metrics.insert("numTargetRowsInserted".into(), json!(outcome.inserted));
                metrics.insert("numTargetRowsCopied".into(), json!(outcome.copied));
                metrics.insert("numTargetFilesScanned".into(), json!(outcome.scanned));
                let written = outcome.updated + outcome.inserted + outcome.copied;
                metrics.insert("numOutputRows".into(), json!(written));
                let removes = outcome.rewritten.into_iter().map(|f| f.remove).collect();
                (removes, Operation::Merge(self.parts.merge_keys.clone()))
            }
        })
    }

    /// After losing a commit race with an append: the table at its newest version, with
    /// `run` given the pipeline's next run sequence and its state merged as it is now.
    async fn replan(&mut self, req: &CommitRequest, run: &mut RunInfo) -> Result<Target> {
        let table = self.parts.location.open_existing().await?;
        let (current, seq) = table::committed_state(&table, &req.ctx.pipeline).await?;
        run.state = state_to_commit(&req.ctx, &current, &req.state)?;
        run.seq = seq + 1;
        self.parts.seq = run.seq;
        Ok(Target::Existing {
            table: Box::new(table),
            evolved: None,
        })
    }

    /// After a failed commit: whether this run's version is in the log anyway (a commit whose
    /// response was lost, a post-commit step of a table's first version that failed). The
    /// log's commit files after `base` are read as they are (not through delta-rs, whose
    /// reading may be what failed): the one whose `commitInfo` names this run is its version.
    async fn committed_anyway(&self, req: &CommitRequest, base: Option<u64>) -> Outcome {
        match table::find_commit(self.parts.store.as_ref(), base, &req.ctx.run_id).await {
            Ok(Some(version)) => Outcome::Committed(version),
            Ok(None) => Outcome::NotCommitted,
            Err(e) => Outcome::Unknown(e.to_string()),
        }
    }
}

/// Every row `sorter` holds, in key order, into `writer`.
async fn drain(sorter: ExternalSort, writer: &mut ParallelWriter) -> Result<()> {
    let spilled = sorter.spilled_runs();
    let mut sorted = sorter.finish().await?;
    while let Some(batch) = sorted.try_next().await? {
        writer.write(batch).await?;
    }
    tracing::info!(spilled, "clustered rows written");
    Ok(())
}

/// Whether a commit that reported an error is in the log.
#[derive(Debug)]
enum Outcome {
    /// It is, at this version: its files are the table's now.
    Committed(u64),
    /// It is not: its files can go.
    NotCommitted,
    /// The log could not be read to tell.
    Unknown(String),
}

/// The table's live data files (none for a new table).
fn live_files(target: Option<&Target>) -> Result<Vec<LiveFile>> {
    let Some(Target::Existing { table, .. }) = target else {
        return Ok(Vec::new());
    };
    let snapshot = table
        .snapshot()
        .map_err(crate::error::delta("reading the table state"))?;
    Ok(snapshot
        .log_data()
        .iter()
        .map(|view| LiveFile {
            has_deletion_vector: view.deletion_vector_descriptor().is_some(),
            remove: view.remove_action(true),
            stats: view.stats(),
        })
        .collect())
}

/// `replace`: which live files go, copying the rows of partly matching files that stay.
async fn replace(
    live: Vec<LiveFile>,
    parts: &SinkParts,
    writer: &mut ParallelWriter,
) -> Result<(Vec<Remove>, u64, u64)> {
    let Some(predicate) = &parts.replace_where else {
        let rows = live.iter().map(|f| f.num_records()).sum();
        return Ok((live.into_iter().map(|f| f.remove).collect(), rows, 0));
    };
    let partitions = &parts.partition_columns;
    let (mut removes, mut deleted, mut copied) = (Vec::new(), 0, 0);
    for file in live {
        let (matching, kept) = if predicate.on_partitions_only(partitions) {
            let one = partition_row(&file, &parts.schema, partitions)?;
            let hit = predicate.eval(&one)?.value(0);
            (hit, 0)
        } else {
            refuse_deletion_vectors(&file, "replace_where")?;
            copy_unmatched(parts, &file, predicate, writer).await?
        };
        if matching {
            deleted += file.num_records().saturating_sub(kept);
            copied += kept;
            removes.push(file.remove);
        }
    }
    Ok((removes, deleted, copied))
}

/// Read `file`; if any row matches `predicate`, copy the others into `writer` and return
/// `(true, rows copied)`.
async fn copy_unmatched(
    parts: &SinkParts,
    file: &LiveFile,
    predicate: &Predicate,
    writer: &mut ParallelWriter,
) -> Result<(bool, u64)> {
    let partitions = &parts.partition_columns;
    let schema = parts.schema.clone();
    let mut any = false;
    let mut stream = Box::pin(read::read(&parts.store, file, schema, partitions).await?);
    while let Some(batch) = stream.try_next().await? {
        if predicate.eval(&batch)?.true_count() > 0 {
            any = true;
            break;
        }
    }
    if !any {
        return Ok((false, 0));
    }
    // The file is read again rather than held: memory stays bounded.
    let mut copied = 0;
    let schema = parts.schema.clone();
    let mut stream = Box::pin(read::read(&parts.store, file, schema, partitions).await?);
    while let Some(batch) = stream.try_next().await? {
        let keep =
            arrow_arith::boolean::not(&predicate.eval(&batch)?).map_err(data("filtering rows"))?;
        let batch = arrow_select::filter::filter_record_batch(&batch, &keep)
            .map_err(data("filtering rows"))?;
        copied += batch.num_rows() as u64;
        writer.write(batch).await?;
    }
    Ok((true, copied))
}

/// Merge and `replace_where` rewrite files by reading them; rows a deletion vector hides
/// would come back.
fn refuse_deletion_vectors(file: &LiveFile, what: &str) -> Result<()> {
    if file.has_deletion_vector {
        return Err(DeltaError::Config(format!(
            "{what} cannot rewrite data file {}: it has a deletion vector (written by another \
             engine); run OPTIMIZE/REORG … APPLY (PURGE) on the table first",
            file.remove.path
        )));
    }
    Ok(())
}

/// A one-row batch of `file`'s partition values, in the table schema (other columns NULL).
fn partition_row(
    file: &LiveFile,
    schema: &SchemaRef,
    partitions: &[String],
) -> Result<RecordBatch> {
    // Every column nullable: only the partition columns have values.
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            if partitions.contains(f.name()) {
                read::constant(file.partition_value(f.name()), f, 1)
            } else {
                Ok(arrow_array::new_null_array(f.data_type(), 1))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema, columns)
        .map_err(|e| DeltaError::Internal(format!("partition values of {}: {e}", file.remove.path)))
}

#[async_trait]
impl Sink for DeltaSink {
    fn schema(&self) -> SchemaRef {
        self.parts.schema.clone()
    }

    async fn write(&mut self, batch: RecordBatch) -> pipe_framework::Result<()> {
        if let Some(predicate) = &self.parts.replace_where {
            predicate.check_incoming(&batch, self.rows)?;
        }
        self.rows += batch.num_rows() as u64;
        let result = match (&mut self.parts.merge, &mut self.sorter, &mut self.writer) {
            (Some(merge), _, _) => merge.write(&batch),
            (None, Some(sorter), _) => sorter.push(batch).map_err(DeltaError::from),
            (None, None, Some(writer)) => writer.write(batch).await,
            (None, None, None) => Err(DeltaError::Internal("write after commit".into())),
        };
        result.map_err(Error::from)
    }

    async fn commit(
        mut self: Box<Self>,
        req: CommitRequest,
    ) -> pipe_framework::Result<CommitReport> {
        let staged = self.stage_all(&req).await;
        let (mut target, change, mut run) = match staged {
            Ok(staged) => staged,
            Err(e) => return Err(self.discard(e).await),
        };
        let mut replans = 0;
        let (version, warning) = loop {
            let base = target.version();
            let replannable = target.appends_only(&change);
            let e = match commit(target, change.clone(), &run).await {
                Ok(committed) => break (committed.version, committed.warning),
                Err(e) => e,
            };
            // Another writer committed first. An append (a backfill window, say) adds files
            // that nothing else refers to: it is planned again on the new version, with the
            // pipeline's run sequence and state as they are now, instead of failing.
            if matches!(e, DeltaError::Conflict(_)) && replannable && replans < self.parts.retries {
                replans += 1;
                match self.replan(&req, &mut run).await {
                    Ok(fresh) => {
                        warn!(
                            attempt = replans,
                            seq = run.seq,
                            "another writer committed first; committing again on the new version"
                        );
                        target = fresh;
                        continue;
                    }
                    Err(replan) => return Err(self.discard(replan).await),
                }
            }
            break match self.committed_anyway(&req, base).await {
                Outcome::Committed(version) => {
                    warn!(error = %e, version, "the commit reported an error, but this run's version is in the log");
                    let warning = format!(
                        "version {version} is committed, but delta-rs failed after writing it: {e}"
                    );
                    (version, Some(warning))
                }
                Outcome::NotCommitted => return Err(self.discard(e).await),
                Outcome::Unknown(why) => {
                    warn!(error = %e, %why, "the commit's outcome is unknown; keeping this run's files");
                    let e = Error::from(e).context(format!(
                        "the commit to {} failed and the log could not be read to tell \
                         whether it landed ({why}); this run's files were kept: run `pipe \
                         status` or `pipe table history delta:<path>` before running again",
                        self.parts.location.url
                    ));
                    return Err(e.commit_unknown());
                }
            };
        };
        self.parts.written.forget_all();
        info!(version, seq = self.parts.seq, "Delta version committed");
        let mut report = std::mem::take(&mut self.report);
        report.commit_id = Some(version.to_string());
        report.warnings.extend(warning);
        report
            .warnings
            .extend(self.parts.maintenance.after_commit(self.parts.seq).await);
        Ok(report)
    }

    async fn abort(mut self: Box<Self>) -> pipe_framework::Result<()> {
        // Let the writer tasks stop before their files are deleted.
        if let Some(writer) = self.writer.take() {
            let _ = writer.close().await;
        }
        let deleted = self
            .parts
            .written
            .delete_all(self.parts.store.as_ref())
            .await;
        info!(deleted, "run aborted; deleted its data files");
        Ok(())
    }
}

impl LiveFile {
    /// Rows in the file, from its statistics (0 if unknown).
    pub(crate) fn num_records(&self) -> u64 {
        self.stats
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|v| v.get("numRecords").and_then(Value::as_u64))
            .unwrap_or(0)
    }
}
