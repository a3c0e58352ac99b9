//! The metadata stage: the table as it is (or as the first run will create it), its schema
//! after evolution, and the run's state stored in snapshot summaries.

use std::collections::HashMap;

use arrow_schema::Schema as ArrowSchema;
use iceberg::spec::{
    FormatVersion, Schema, SortOrder, TableMetadata, TableMetadataBuilder, UnboundPartitionSpec,
};
use iceberg::{TableCreation, TableIdent};
use pipe_framework::{SchemaEvolution, State};

use crate::catalog::{CommitTarget, Loaded, NewLocation};
use crate::config::IcebergConfig;
use crate::error::{IcebergError, Result, ice};
use crate::layout::{partition_spec, sort_order};

/// Summary key: the pipeline that wrote a snapshot.
pub(crate) const PIPELINE_KEY: &str = "pipe.pipeline";
/// Summary key: the run that wrote a snapshot.
pub(crate) const RUN_KEY: &str = "pipe.run-id";
/// Summary key prefix of the pipeline's committed state (`pipe.state.cursor.updated_at`).
pub(crate) const STATE_PREFIX: &str = "pipe.state.";

/// Parse `namespace.table`.
pub(crate) fn table_ident(name: &str) -> Result<TableIdent> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.trim().is_empty()) {
        return Err(IcebergError::Config(format!(
            "table `{name}`: expected `namespace.table`"
        )));
    }
    TableIdent::from_strs(parts).map_err(ice(format!("table `{name}`")))
}

/// Where the run writes: an existing table, or one its commit will create.
#[derive(Debug, Clone)]
pub(crate) enum Planned {
    /// The table exists; `schema` is set when this run evolves it.
    Existing {
        /// As loaded when the run started.
        base: Loaded,
        /// The evolved schema, if any.
        schema: Option<Box<Schema>>,
    },
    /// The first run: the commit creates the table from `creation`; `metadata` is what the
    /// catalog will build from it (schema with final field ids, spec, location).
    New {
        /// What the table is created from.
        creation: Box<NewTable>,
        /// Its metadata, built locally the same way the catalog will.
        metadata: Box<TableMetadata>,
    },
}

impl Planned {
    /// The metadata data files are written against.
    pub(crate) fn metadata(&self) -> &TableMetadata {
        match self {
            Planned::Existing { base, .. } => &base.metadata,
            Planned::New { metadata, .. } => metadata,
        }
    }

    /// The schema rows are written in.
    pub(crate) fn schema(&self) -> Schema {
        match self {
            Planned::Existing {
                schema: Some(s), ..
            } => s.as_ref().clone(),
            _ => self.metadata().current_schema().as_ref().clone(),
        }
    }
}

/// The parts of a [`TableCreation`] (which is not `Clone`).
#[derive(Debug, Clone)]
pub(crate) struct NewTable {
    name: String,
    location: Option<String>,
    schema: Schema,
    spec: UnboundPartitionSpec,
    order: Option<SortOrder>,
    properties: HashMap<String, String>,
}

impl NewTable {
    /// The creation request.
    pub(crate) fn creation(&self) -> TableCreation {
        TableCreation::builder()
            .name(self.name.clone())
            .location_opt(self.location.clone())
            .schema(self.schema.clone())
            .partition_spec(self.spec.clone())
            .sort_order_opt(self.order.clone())
            .properties(self.properties.clone())
            .build()
    }
}

/// Plan the table for a run whose source has `source` columns.
pub(crate) async fn plan(
    target: &dyn CommitTarget,
    config: &IcebergConfig,
    source: &ArrowSchema,
    policy: SchemaEvolution,
) -> Result<Planned> {
    if let Some(base) = target.load().await? {
        return existing(base, config, source, policy);
    }
    let schema = crate::schema::new_table_schema(source)?;
    let spec = partition_spec(&schema, &config.partition_by)?;
    let order = sort_order(&schema, &config.sort_order)?;
    let properties: HashMap<String, String> = config.properties.clone().into_iter().collect();
    let mut creation = NewTable {
        name: table_ident(&config.table)?.name().to_string(),
        location: None,
        schema,
        spec,
        order,
        properties,
    };
    match target.new_location(creation.creation()).await? {
        NewLocation::At(location) => creation.location = Some(location),
        NewLocation::Created(base) => return existing(base, config, source, policy),
    }
    let metadata = TableMetadataBuilder::from_table_creation(creation.creation())
        .map_err(ice("planning the new table"))?
        .build()
        .map_err(ice("planning the new table"))?
        .metadata;
    Ok(Planned::New {
        creation: Box::new(creation),
        metadata: Box::new(metadata),
    })
}

/// The plan on a table that exists.
fn existing(
    base: Loaded,
    config: &IcebergConfig,
    source: &ArrowSchema,
    policy: SchemaEvolution,
) -> Result<Planned> {
    if base.metadata.format_version() != FormatVersion::V2 {
        return Err(IcebergError::Config(format!(
            "table {} is Iceberg format {}; pipe writes format 2 tables only",
            config.table,
            base.metadata.format_version()
        )));
    }
    let schema = crate::schema::evolve(
        base.metadata.current_schema(),
        base.metadata.last_column_id(),
        source,
        policy,
    )?;
    Ok(Planned::Existing {
        base,
        schema: schema.map(Box::new),
    })
}

/// The state the last snapshot written by `pipeline` recorded, walking back from the
/// current snapshot (snapshots of other writers are skipped).
pub(crate) fn committed_state(metadata: &TableMetadata, pipeline: &str) -> State {
    let mut next = metadata.current_snapshot().cloned();
    while let Some(snapshot) = next {
        let props = &snapshot.summary().additional_properties;
        if props.get(PIPELINE_KEY).map(String::as_str) == Some(pipeline) {
            return props
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(STATE_PREFIX)
                        .map(|key| (key.to_string(), v.clone()))
                })
                .collect();
        }
        next = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id).cloned());
    }
    State::new()
}
