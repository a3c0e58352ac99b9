//! One Delta commit per run: the run's `add`/`remove` actions, a schema change if the run
//! evolved the table, the application transaction (`txn`: pipeline, run sequence) and the
//! pipeline state in `commitInfo`. A first run creates the table in the same commit.

use std::collections::HashMap;

use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, MetadataExt, Remove, StructType, Transaction};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, MergePredicate, SaveMode};
use serde_json::{Value, json};
use tracing::warn;

use crate::error::{DeltaError, Result, delta};
use crate::table::{PIPELINE_KEY, RUN_ID_KEY, RUN_SEQ_KEY, STATE_KEY};

/// The table a run commits to.
#[derive(Debug)]
pub(crate) enum Target {
    /// An existing table, at the version the run was planned on (conflicts are checked
    /// from there); `evolved` is its new schema if the run adds columns.
    Existing {
        /// The table as loaded when the run started.
        table: Box<DeltaTable>,
        /// The schema after this run, if it changes.
        evolved: Option<StructType>,
    },
    /// No table yet: the commit creates it.
    New {
        /// Its unloaded handle.
        table: Box<DeltaTable>,
        /// Its schema.
        schema: StructType,
        /// Partition columns.
        partition_columns: Vec<String>,
        /// Table properties.
        properties: HashMap<String, String>,
    },
}

/// What the run changes, and how it is recorded.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// New data files.
    pub adds: Vec<Add>,
    /// Data files no longer part of the table.
    pub removes: Vec<Remove>,
    /// The operation in the history.
    pub operation: Operation,
    /// `operationMetrics` in `commitInfo`.
    pub metrics: serde_json::Map<String, Value>,
}

/// The run's operation as the history shows it.
#[derive(Debug, Clone)]
pub(crate) enum Operation {
    /// `WRITE`, mode Append.
    Append,
    /// `WRITE`, mode Overwrite, with the `replace_where` predicate if any.
    Overwrite(Option<String>),
    /// `MERGE` on these keys.
    Merge(Vec<String>),
}

/// Who commits: the pipeline's identity and state.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    /// Pipeline name: the `txn` app id.
    pub pipeline: String,
    /// Run id.
    pub run_id: String,
    /// Run sequence number: the `txn` version.
    pub seq: i64,
    /// The whole pipeline state after this run.
    pub state: pipe_framework::State,
    /// Commit attempts after losing a race.
    pub retries: usize,
}

impl Operation {
    fn delta(&self, partition_by: &[String]) -> DeltaOperation {
        let partition_by = (!partition_by.is_empty()).then(|| partition_by.to_vec());
        match self {
            Operation::Append => DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by,
                predicate: None,
            },
            Operation::Overwrite(predicate) => DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by,
                predicate: predicate.clone(),
            },
            Operation::Merge(keys) => {
                let on = keys
                    .iter()
                    .map(|k| format!("target.`{k}` = source.`{k}`"))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                DeltaOperation::Merge {
                    // No predicate: the merge read the whole table (conflict checks assume so).
                    predicate: None,
                    merge_predicate: Some(on),
                    matched_predicates: vec![MergePredicate {
                        action_type: "update".into(),
                        predicate: None,
                    }],
                    not_matched_predicates: vec![MergePredicate {
                        action_type: "insert".into(),
                        predicate: None,
                    }],
                    not_matched_by_source_predicates: Vec::new(),
                }
            }
        }
    }
}

fn properties(run: &RunInfo, metrics: serde_json::Map<String, Value>) -> CommitProperties {
    let state: serde_json::Map<String, Value> = run
        .state
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    CommitProperties::default()
        .with_metadata([
            (PIPELINE_KEY.to_string(), json!(run.pipeline)),
            (RUN_ID_KEY.to_string(), json!(run.run_id)),
            (RUN_SEQ_KEY.to_string(), json!(run.seq)),
            (STATE_KEY.to_string(), Value::Object(state)),
            ("operationMetrics".to_string(), Value::Object(metrics)),
        ])
        .with_application_transaction(Transaction::new(&run.pipeline, run.seq))
        .with_max_retries(run.retries)
}

impl Target {
    /// Whether committing `change` here only adds files to an existing table whose schema
    /// it does not change: then it can be planned again on a newer version.
    pub(crate) fn appends_only(&self, change: &Change) -> bool {
        matches!(self, Target::Existing { evolved: None, .. })
            && change.removes.is_empty()
            && matches!(change.operation, Operation::Append)
    }

    /// The table version the run is planned on (`None`: no table yet).
    pub(crate) fn version(&self) -> Option<u64> {
        match self {
            Target::Existing { table, .. } => table.version(),
            Target::New { .. } => None,
        }
    }
}

/// A version in the log.
#[derive(Debug)]
pub(crate) struct Committed {
    /// The table version the commit created.
    pub version: u64,
    /// A failure after the version was written (a checkpoint, the log cleanup): the version
    /// is committed; the user should hear of it.
    pub warning: Option<String>,
}

/// Commit `change` to `target`.
pub(crate) async fn commit(target: Target, change: Change, run: &RunInfo) -> Result<Committed> {
    let props = properties(run, change.metrics);
    match target {
        Target::New {
            table,
            schema,
            partition_columns,
            properties,
        } => {
            if !change.removes.is_empty() {
                return Err(DeltaError::Internal(
                    "removing files from a new table".into(),
                ));
            }
            let created = CreateBuilder::new()
                .with_log_store(table.log_store())
                .with_columns(schema.fields().cloned())
                .with_partition_columns(partition_columns)
                .with_configuration(properties.into_iter().map(|(k, v)| (k, Some(v))))
                .with_actions(change.adds.into_iter().map(Action::Add))
                .with_commit_properties(props)
                .await
                .map_err(delta("creating the Delta table"))?;
            let version = created
                .version()
                .ok_or_else(|| DeltaError::Internal("the new table has no version".into()))?;
            Ok(Committed {
                version,
                warning: None,
            })
        }
        Target::Existing { table, evolved } => {
            let snapshot = table.snapshot().map_err(delta("reading the table state"))?;
            let partition_by = snapshot.metadata().partition_columns().to_vec();
            let mut actions = Vec::with_capacity(change.adds.len() + change.removes.len() + 1);
            if let Some(schema) = evolved {
                let metadata = snapshot
                    .metadata()
                    .clone()
                    .with_schema(&schema)
                    .map_err(|e| delta("evolving the table schema")(e.into()))?;
                actions.push(Action::Metadata(metadata));
            }
            actions.extend(change.removes.into_iter().map(Action::Remove));
            actions.extend(change.adds.into_iter().map(Action::Add));
            let committed = CommitBuilder::from(props)
                .with_actions(actions)
                .build(
                    Some(snapshot),
                    table.log_store(),
                    change.operation.delta(&partition_by),
                )
                .into_prepared_commit_future()
                .await
                .map_err(delta("preparing the Delta commit"))?
                .await
                .map_err(delta("committing to the Delta table"))?;
            // The version is in the log now: a failing post-commit hook (checkpoint, log
            // cleanup) must not make the run look failed, or its files would be deleted.
            let version = committed.version;
            let warning = match committed.await {
                Ok(_) => None,
                Err(e) => {
                    warn!(version, error = %e, "post-commit hook failed; the version is committed");
                    Some(format!(
                        "version {version} is committed, but a post-commit step (checkpoint, \
                         log cleanup) failed: {e}"
                    ))
                }
            };
            Ok(Committed { version, warning })
        }
    }
}
