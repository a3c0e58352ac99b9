//! An Iceberg REST catalog (and Nessie, a REST catalog whose prefix is a branch) as a
//! [`CommitTarget`]: load and create through the spec's endpoints, commit by posting the
//! change's `TableRequirement`s and `TableUpdate`s as a `CommitTableRequest`.
//!
//! The wire types are iceberg-catalog-rest's (public, serialized as the spec says); the HTTP
//! client, `/v1/config` and OAuth2 are pipe's own ([`client`], [`auth`]), because the crate's
//! `RestCatalog` keeps its client private and cannot commit a change built outside it.

mod auth;
pub(crate) mod client;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::{UnboundPartitionField, UnboundPartitionSpec};
use iceberg::{TableCreation, TableIdent};
use iceberg_catalog_rest::{
    CommitTableRequest, CommitTableResponse, CreateNamespaceRequest, CreateTableRequest,
    LoadTableResult, NamespaceResponse,
};
use reqwest::{Method, StatusCode};

use self::client::{Answer, RestClient};
use super::{CommitTarget, Loaded, NewLocation};
use crate::commit::TableChange;
use crate::config::RestCatalogConfig;
use crate::error::{IcebergError, Result};
use crate::io::StorageOptions;

/// A table in a REST catalog.
#[derive(Debug)]
pub(crate) struct RestTarget {
    client: RestClient,
    table: TableIdent,
    create_namespace: bool,
    /// Set once the namespace is known to exist (planning and committing a new table both
    /// need it).
    namespace_checked: tokio::sync::OnceCell<()>,
    file_io: FileIO,
    /// Object-store options for the table's files.
    storage: StorageOptions,
}

impl RestTarget {
    /// Connect to the catalog (`/v1/config`, the token) and check the prefix exists.
    /// `nessie`: the Nessie flavour (the branch makes the prefix).
    pub(crate) async fn connect(
        config: &RestCatalogConfig,
        nessie: bool,
        storage: &StorageOptions,
        table: TableIdent,
    ) -> Result<Self> {
        let branch = match (nessie, &config.branch) {
            (true, b) => Some(b.clone().unwrap_or_else(|| "main".into())),
            (false, Some(_)) => {
                return Err(IcebergError::Config(
                    "catalog key `branch` is Nessie's: use catalog type = \"nessie\"".into(),
                ));
            }
            (false, None) => None,
        };
        let client = RestClient::connect(config, branch.as_deref()).await?;
        // An unknown prefix (warehouse, environment, branch) answers 404 here, before any
        // table is looked for.
        let answer: Answer<serde_json::Value> = client
            .call(Method::GET, &client.path("/namespaces"), &[], None::<&()>)
            .await
            .map_err(|e| client.unreachable(e))?;
        if let Answer::Refused(r) = answer {
            let what = match (&branch, client.prefix()) {
                (Some(b), _) => format!("looking up Nessie branch `{b}`"),
                (None, Some(p)) => format!("listing namespaces under prefix `{p}`"),
                (None, None) => "listing namespaces".to_string(),
            };
            let hint = if r.status == StatusCode::NOT_FOUND {
                match &branch {
                    Some(_) => "; the branch (or warehouse) does not exist in this Nessie",
                    None => "; check the catalog's `prefix` (or `warehouse`)",
                }
            } else {
                ""
            };
            let mut e = client.refused(&what, r);
            if let IcebergError::Rest { message, .. } = &mut e {
                message.push_str(hint);
            }
            return Err(e);
        }
        Ok(Self {
            client,
            table,
            create_namespace: config.create_namespace,
            namespace_checked: tokio::sync::OnceCell::new(),
            file_io: crate::io::file_io(storage),
            storage: storage.clone(),
        })
    }

    /// The table's namespace exists, or is created if the settings allow it (checked once).
    async fn ensure_namespace(&self) -> Result<()> {
        self.namespace_checked
            .get_or_try_init(|| self.check_namespace())
            .await
            .map(|_| ())
    }

    async fn check_namespace(&self) -> Result<()> {
        let ns = self.table.namespace();
        let path = self
            .client
            .path(&format!("/namespaces/{}", client::namespace_segment(ns)));
        let found: Answer<NamespaceResponse> = self
            .client
            .call(Method::GET, &path, &[], None::<&()>)
            .await
            .map_err(|e| self.client.unreachable(e))?;
        match found {
            Answer::Ok(_) => return Ok(()),
            Answer::Refused(r) if r.status == StatusCode::NOT_FOUND => {}
            Answer::Refused(r) => {
                return Err(self
                    .client
                    .refused(&format!("looking up namespace {}", ns.join(".")), r));
            }
        }
        if !self.create_namespace {
            return Err(IcebergError::Config(format!(
                "namespace `{}` does not exist in the REST catalog {}: create it there, or set \
                 create_namespace = true in the catalog settings",
                ns.join("."),
                self.client.describe()
            )));
        }
        let request = CreateNamespaceRequest {
            namespace: ns.clone(),
            properties: HashMap::new(),
        };
        let created: Answer<serde_json::Value> = self
            .client
            .call(
                Method::POST,
                &self.client.path("/namespaces"),
                &[],
                Some(&request),
            )
            .await
            .map_err(|e| self.client.unreachable(e))?;
        match created {
            Answer::Ok(_) => {
                tracing::info!(namespace = %ns.join("."), "namespace created");
                Ok(())
            }
            // Another writer created it meanwhile.
            Answer::Refused(r) if r.status == StatusCode::CONFLICT => Ok(()),
            Answer::Refused(r) => Err(self
                .client
                .refused(&format!("creating namespace {}", ns.join(".")), r)),
        }
    }

    /// What a load or create returned, as [`Loaded`], its location's storage checked.
    fn loaded(&self, result: LoadTableResult) -> Result<Loaded> {
        let location = result.metadata.location().to_string();
        super::check_location(&location, &self.storage)?;
        if !result.config.is_empty() || result.storage_credentials.is_some() {
            tracing::debug!(
                keys = ?result.config.keys().collect::<Vec<_>>(),
                "the catalog vended storage settings: not used (storage_options and the environment configure storage)"
            );
        }
        Ok(Loaded {
            location: result.metadata_location.unwrap_or_default(),
            metadata: Arc::new(result.metadata),
        })
    }

    fn create_request(creation: &TableCreation, stage: bool) -> CreateTableRequest {
        CreateTableRequest {
            name: creation.name.clone(),
            location: creation.location.clone(),
            schema: creation.schema.clone(),
            partition_spec: creation.partition_spec.clone().map(with_field_ids),
            write_order: creation.sort_order.clone(),
            stage_create: stage.then_some(true),
            properties: creation.properties.clone(),
        }
    }

    async fn post_create(&self, creation: &TableCreation, stage: bool) -> Result<Answer<Loaded>> {
        let path = self.client.path(&format!(
            "/namespaces/{}/tables",
            client::namespace_segment(self.table.namespace())
        ));
        let request = Self::create_request(creation, stage);
        let answer: Answer<LoadTableResult> = self
            .client
            .call(Method::POST, &path, &[], Some(&request))
            .await
            .map_err(|e| self.client.unreachable(e))?;
        Ok(match answer {
            Answer::Ok(r) => Answer::Ok(self.loaded(r)?),
            Answer::Refused(r) => Answer::Refused(r),
        })
    }
}

/// The spec with every partition field's id set (1000, 1001, ... as Java and pyiceberg assign
/// them): the spec leaves `field-id` optional in a create, but catalogs built on pyiceberg's
/// models (lakana-server) refuse a field without one.
fn with_field_ids(spec: UnboundPartitionSpec) -> UnboundPartitionSpec {
    let fields = spec
        .fields()
        .iter()
        .zip(1000..)
        .map(|(f, id)| UnboundPartitionField {
            field_id: Some(f.field_id.unwrap_or(id)),
            ..f.clone()
        });
    let builder = match spec.spec_id() {
        Some(id) => UnboundPartitionSpec::builder().with_spec_id(id),
        None => UnboundPartitionSpec::builder(),
    };
    match builder.add_partition_fields(fields) {
        Ok(b) => b.build(),
        Err(_) => spec,
    }
}

#[async_trait]
impl CommitTarget for RestTarget {
    async fn load(&self) -> Result<Option<Loaded>> {
        let answer: Answer<LoadTableResult> = self
            .client
            .call(
                Method::GET,
                &self.client.table_path(&self.table),
                &[],
                None::<&()>,
            )
            .await
            .map_err(|e| self.client.unreachable(e))?;
        match answer {
            Answer::Ok(r) => Ok(Some(self.loaded(r)?)),
            // NoSuchTableException or NoSuchNamespaceException by the spec (lakana-server says
            // NotFoundError): the prefix was checked at connect, so a 404 is the table's.
            Answer::Refused(r) if r.status == StatusCode::NOT_FOUND => Ok(None),
            Answer::Refused(r) => Err(self
                .client
                .refused(&format!("loading table {}", self.table), r)),
        }
    }

    /// Ask the catalog where the table would go (a staged create, which commits nothing).
    /// A catalog that cannot stage creates it now, empty, and the run commits on it.
    async fn new_location(&self, creation: TableCreation) -> Result<NewLocation> {
        self.ensure_namespace().await?;
        match self.post_create(&creation, true).await? {
            Answer::Ok(staged) => Ok(NewLocation::At(staged.metadata.location().to_string())),
            Answer::Refused(r) if r.status == StatusCode::CONFLICT => match self.load().await? {
                Some(existing) => Ok(NewLocation::Created(existing)),
                None => Err(self
                    .client
                    .refused(&format!("creating table {}", self.table), r)),
            },
            Answer::Refused(staging)
                if matches!(staging.status.as_u16(), 400 | 405 | 406 | 422 | 501) =>
            {
                tracing::info!(
                    table = %self.table,
                    answer = %staging.message,
                    "the catalog cannot stage a table creation: creating the table now"
                );
                let creation = TableCreation {
                    location: None,
                    ..creation
                };
                Ok(NewLocation::Created(self.create(creation).await?))
            }
            Answer::Refused(r) => Err(self
                .client
                .refused(&format!("staging the creation of table {}", self.table), r)),
        }
    }

    async fn create(&self, creation: TableCreation) -> Result<Loaded> {
        self.ensure_namespace().await?;
        match self.post_create(&creation, false).await? {
            Answer::Ok(created) => {
                tracing::info!(table = %self.table, "table created");
                Ok(created)
            }
            // Another writer's first run created it meanwhile: commit on top of theirs.
            Answer::Refused(r) if r.status == StatusCode::CONFLICT => match self.load().await? {
                Some(existing) => Ok(existing),
                None => Err(self
                    .client
                    .refused(&format!("creating table {}", self.table), r)),
            },
            Answer::Refused(r) => Err(self
                .client
                .refused(&format!("creating table {}", self.table), r)),
        }
    }

    async fn register(&self, metadata_location: &str) -> Result<Loaded> {
        self.ensure_namespace().await?;
        let path = self.client.path(&format!(
            "/namespaces/{}/register",
            client::namespace_segment(self.table.namespace())
        ));
        let request = serde_json::json!({
            "name": self.table.name(),
            "metadata-location": metadata_location,
        });
        let what = format!("registering table {}", self.table);
        let answer: Answer<LoadTableResult> = self
            .client
            .call(Method::POST, &path, &[], Some(&request))
            .await
            .map_err(|e| self.client.unreachable(e))?;
        match answer {
            Answer::Ok(r) => {
                tracing::info!(table = %self.table, "table registered");
                let mut loaded = self.loaded(r)?;
                if loaded.location.is_empty() {
                    loaded.location = metadata_location.to_string();
                }
                Ok(loaded)
            }
            Answer::Refused(r) => Err(self.client.refused(&what, r)),
        }
    }

    /// Post the change. `409`: another writer committed first. A `5xx`, a timeout or a
    /// connection lost after the request went out leave the outcome unknown.
    async fn commit(&self, change: &TableChange) -> Result<Option<Loaded>> {
        let request = CommitTableRequest {
            identifier: Some(self.table.clone()),
            requirements: change.requirements.clone(),
            updates: change.updates.clone(),
        };
        tracing::debug!(
            table = %self.table,
            updates = change.updates.len(),
            requirements = change.requirements.len(),
            "committing through the REST catalog"
        );
        let what = format!("committing to table {}", self.table);
        let answer: std::result::Result<Answer<CommitTableResponse>, _> = self
            .client
            .call(
                Method::POST,
                &self.client.table_path(&self.table),
                &[],
                Some(&request),
            )
            .await;
        match answer {
            // Committed: nothing may fail after this (a failure would delete the files the
            // table now references).
            Ok(Answer::Ok(r)) => Ok(Some(Loaded {
                location: r.metadata_location,
                metadata: Arc::new(r.metadata),
            })),
            Ok(Answer::Refused(r)) if r.status == StatusCode::CONFLICT => {
                tracing::info!(table = %self.table, answer = %r.message, "commit conflict");
                Ok(None)
            }
            // A success whose body could not be read, or a server error: either may have
            // committed.
            Ok(Answer::Refused(r)) if r.status.is_success() || r.status.is_server_error() => {
                Err(IcebergError::CommitUnknown {
                    what: format!("{what} (REST catalog {})", self.client.describe()),
                    source: format!("HTTP {}: {}", r.status.as_u16(), r.message).into(),
                })
            }
            Ok(Answer::Refused(r)) => Err(self.client.refused(&what, r)),
            // The request never left (no token, no connection): nothing happened.
            Err(f) if !f.sent => Err(self.client.unreachable(f)),
            Err(f) => Err(IcebergError::CommitUnknown {
                what: format!("{what} (REST catalog {})", self.client.describe()),
                source: client::describe_http_error(&f.error).into(),
            }),
        }
    }

    fn storage(&self) -> &StorageOptions {
        &self.storage
    }

    fn file_io(&self) -> &FileIO {
        &self.file_io
    }
}

#[cfg(test)]
mod tests {
    use iceberg::spec::Transform;

    use super::*;

    #[test]
    fn partition_fields_get_the_ids_java_assigns() {
        let spec = UnboundPartitionSpec::builder()
            .add_partition_field(4, "region", Transform::Identity)
            .and_then(|b| b.add_partition_field(2, "day", Transform::Day))
            .expect("spec")
            .build();
        let ids: Vec<Option<i32>> = with_field_ids(spec)
            .fields()
            .iter()
            .map(|f| f.field_id)
            .collect();
        assert_eq!(ids, [Some(1000), Some(1001)]);
    }
}
