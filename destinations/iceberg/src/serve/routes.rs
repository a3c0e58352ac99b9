//! The REST catalog's endpoints: `/v1/config`, `/v1/oauth/tokens`, namespaces and tables
//! (create, staged create, load, list, exists, drop with or without purge, rename, register,
//! commit), under `/v1` or `/v1/<prefix>`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent, TableRequirement};
use iceberg_catalog_rest::{
    CommitTableRequest, CommitTableResponse, CreateNamespaceRequest, CreateTableRequest,
    ListNamespaceResponse, ListTablesResponse, LoadTableResult, NamespaceResponse,
    RegisterTableRequest, RenameTableRequest, UpdateNamespacePropertiesRequest,
    UpdateNamespacePropertiesResponse,
};
use serde::de::DeserializeOwned;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use super::AppState;
use super::auth::{require_token, tokens};
use super::error::ApiError;

type Shared = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

/// A commit losing the pointer swap to a concurrent one re-checks its requirements on the new
/// table state; this many times before giving up.
const SWAP_ATTEMPTS: usize = 32;

/// Every route, behind the token check and the body limit.
pub(crate) fn router(state: Arc<AppState>, max_body: usize) -> Router {
    let api = Router::new()
        .route("/namespaces", get(list_namespaces).post(create_namespace))
        .route(
            "/namespaces/{namespace}",
            get(load_namespace)
                .head(namespace_exists)
                .delete(drop_namespace),
        )
        .route(
            "/namespaces/{namespace}/properties",
            post(update_properties),
        )
        .route(
            "/namespaces/{namespace}/tables",
            get(list_tables).post(create_table),
        )
        .route("/namespaces/{namespace}/register", post(register_table))
        .route(
            "/namespaces/{namespace}/tables/{table}",
            get(load_table)
                .head(table_exists)
                .post(commit_table)
                .delete(drop_table),
        )
        .route("/tables/rename", post(rename_table));
    let api = match &state.prefix {
        Some(_) => Router::new().nest("/v1/{prefix}", api),
        None => Router::new().nest("/v1", api),
    };
    let guarded = api
        .route("/v1/config", get(config))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/v1/oauth/tokens", post(tokens))
        .merge(guarded)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFoundException",
                "no such endpoint",
            )
        })
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

/// The path's namespace and table, after checking its prefix.
struct Scope {
    params: HashMap<String, String>,
}

impl FromRequestParts<Arc<AppState>> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> ApiResult<Self> {
        // A route without parameters (`/v1/namespaces`) has none to extract.
        let params = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| p)
            .unwrap_or_default();
        if let Some(served) = &state.prefix
            && params.get("prefix") != Some(served)
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFoundException",
                format!(
                    "unknown prefix `{}`: this catalog serves `{served}`",
                    params.get("prefix").map_or("", String::as_str)
                ),
            ));
        }
        Ok(Self { params })
    }
}

impl Scope {
    fn namespace(&self) -> ApiResult<NamespaceIdent> {
        let raw = self.params.get("namespace").map_or("", String::as_str);
        namespace(raw)
    }

    fn table(&self) -> ApiResult<TableIdent> {
        let name = self.params.get("table").cloned().unwrap_or_default();
        Ok(TableIdent::new(self.namespace()?, name))
    }
}

/// A namespace from its path form (levels joined by the unit separator).
fn namespace(raw: &str) -> ApiResult<NamespaceIdent> {
    NamespaceIdent::from_vec(raw.split('\u{1f}').map(str::to_string).collect())
        .map_err(|e| ApiError::bad_request(format!("namespace `{raw}`: {e}")))
}

/// A namespace level or table name that is also a safe directory name.
fn check_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\u{1f}']) {
        return Err(ApiError::bad_request(format!(
            "`{name}` cannot name a namespace or table (empty, `.`, `..`, or holds a `/`)"
        )));
    }
    Ok(())
}

/// Refuse a location outside the warehouse: the server writes, registers and purges files
/// there only.
fn check_inside(state: &AppState, location: &str, what: &str) -> ApiResult<()> {
    let root = state.db.warehouse().trim_end_matches('/');
    let inside = location
        .strip_prefix(root)
        .is_some_and(|rest| rest.starts_with('/'))
        && !location.split('/').any(|part| part == "..");
    if inside {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ForbiddenException",
            format!("{what} `{location}` is outside this catalog's warehouse {root}"),
        ))
    }
}

/// The request body as `T`, or a 400 in the spec's error form.
fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed request body: {e}")))
}

async fn config(State(state): Shared) -> Json<serde_json::Value> {
    let overrides = match &state.prefix {
        Some(p) => serde_json::json!({ "prefix": p }),
        None => serde_json::json!({}),
    };
    Json(serde_json::json!({ "defaults": {}, "overrides": overrides }))
}

async fn list_namespaces(
    State(state): Shared,
    _scope: Scope,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<ListNamespaceResponse>> {
    let parent = match query.get("parent").filter(|p| !p.is_empty()) {
        Some(p) => Some(namespace(p)?),
        None => None,
    };
    let namespaces = state.db.catalog.list_namespaces(parent.as_ref()).await?;
    Ok(Json(ListNamespaceResponse {
        namespaces,
        next_page_token: None,
    }))
}

async fn create_namespace(
    State(state): Shared,
    _scope: Scope,
    body: Bytes,
) -> ApiResult<Json<NamespaceResponse>> {
    let request: CreateNamespaceRequest = parse(&body)?;
    for level in request.namespace.iter() {
        check_name(level)?;
    }
    let created = state
        .db
        .catalog
        .create_namespace(&request.namespace, request.properties)
        .await?;
    tracing::info!(namespace = %request.namespace.join("."), "namespace created");
    Ok(Json(NamespaceResponse {
        namespace: created.name().clone(),
        properties: created.properties().clone(),
    }))
}

async fn load_namespace(State(state): Shared, scope: Scope) -> ApiResult<Json<NamespaceResponse>> {
    let ns = scope.namespace()?;
    let found = state.db.catalog.get_namespace(&ns).await?;
    Ok(Json(NamespaceResponse {
        namespace: found.name().clone(),
        properties: found.properties().clone(),
    }))
}

async fn namespace_exists(State(state): Shared, scope: Scope) -> ApiResult<StatusCode> {
    let ns = scope.namespace()?;
    Ok(match state.db.catalog.namespace_exists(&ns).await? {
        true => StatusCode::NO_CONTENT,
        false => StatusCode::NOT_FOUND,
    })
}

/// Drop an empty namespace: no tables (iceberg-catalog-sql checks) and no child namespaces.
async fn drop_namespace(State(state): Shared, scope: Scope) -> ApiResult<StatusCode> {
    let ns = scope.namespace()?;
    if state.db.catalog.namespace_exists(&ns).await?
        && !state
            .db
            .catalog
            .list_namespaces(Some(&ns))
            .await?
            .is_empty()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "NamespaceNotEmptyException",
            format!("namespace {} has namespaces in it", ns.join(".")),
        ));
    }
    state.db.catalog.drop_namespace(&ns).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update_properties(
    State(state): Shared,
    scope: Scope,
    body: Bytes,
) -> ApiResult<Json<UpdateNamespacePropertiesResponse>> {
    let ns = scope.namespace()?;
    let request: UpdateNamespacePropertiesRequest = parse(&body)?;
    let removals = request.removals.unwrap_or_default();
    if let Some(both) = removals.iter().find(|k| request.updates.contains_key(*k)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnprocessableEntityException",
            format!("property `{both}` is both updated and removed"),
        ));
    }
    let before = state.db.catalog.get_namespace(&ns).await?;
    let (removed, missing): (Vec<String>, Vec<String>) = removals
        .into_iter()
        .partition(|k| before.properties().contains_key(k));
    state.db.remove_namespace_properties(&ns, &removed).await?;
    let updated: Vec<String> = request.updates.keys().cloned().collect();
    if !request.updates.is_empty() {
        state
            .db
            .catalog
            .update_namespace(&ns, request.updates)
            .await?;
    }
    Ok(Json(UpdateNamespacePropertiesResponse {
        updated,
        removed,
        missing: (!missing.is_empty()).then_some(missing),
    }))
}

async fn list_tables(State(state): Shared, scope: Scope) -> ApiResult<Json<ListTablesResponse>> {
    let ns = scope.namespace()?;
    if !state.db.catalog.namespace_exists(&ns).await? {
        return Err(ApiError::no_namespace(&ns.join(".")));
    }
    let identifiers = state.db.catalog.list_tables(&ns).await?;
    Ok(Json(ListTablesResponse {
        identifiers,
        next_page_token: None,
    }))
}

/// A table's metadata as the spec returns it (no storage config: tables are local).
fn load_result(metadata_location: Option<String>, metadata: TableMetadata) -> LoadTableResult {
    LoadTableResult {
        metadata_location,
        metadata,
        config: HashMap::new(),
        storage_credentials: None,
    }
}

/// Create a table; with `stage-create`, only say what it would be (nothing is stored).
async fn create_table(
    State(state): Shared,
    scope: Scope,
    body: Bytes,
) -> ApiResult<Json<LoadTableResult>> {
    let ns = scope.namespace()?;
    let request: CreateTableRequest = parse(&body)?;
    check_name(&request.name)?;
    let ident = TableIdent::new(ns.clone(), request.name.clone());
    if !state.db.catalog.namespace_exists(&ns).await? {
        return Err(ApiError::no_namespace(&ns.join(".")));
    }
    let location = request
        .location
        .clone()
        .unwrap_or_else(|| state.db.default_location(&ident));
    check_inside(&state, &location, "table location")?;
    let creation = TableCreation::builder()
        .name(request.name)
        .location(location)
        .schema(request.schema)
        .partition_spec_opt(request.partition_spec)
        .sort_order_opt(request.write_order)
        .properties(request.properties)
        .build();
    if request.stage_create == Some(true) {
        if state.db.catalog.table_exists(&ident).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "AlreadyExistsException",
                format!("table already exists: {ident}"),
            ));
        }
        let metadata = TableMetadataBuilder::from_table_creation(creation)?
            .build()?
            .metadata;
        return Ok(Json(load_result(None, metadata)));
    }
    let table = match state.db.catalog.create_table(&ns, creation).await {
        Ok(table) => table,
        // A concurrent create won the insert.
        Err(_) if state.db.catalog.table_exists(&ident).await? => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "AlreadyExistsException",
                format!("table already exists: {ident}"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(table = %ident, "table created");
    Ok(Json(load_result(
        table.metadata_location().map(str::to_string),
        table.metadata().clone(),
    )))
}

async fn register_table(
    State(state): Shared,
    scope: Scope,
    body: Bytes,
) -> ApiResult<Json<LoadTableResult>> {
    let ns = scope.namespace()?;
    let request: RegisterTableRequest = parse(&body)?;
    check_name(&request.name)?;
    check_inside(&state, &request.metadata_location, "metadata file")?;
    let ident = TableIdent::new(ns, request.name);
    if request.overwrite == Some(true) && state.db.catalog.table_exists(&ident).await? {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "UnsupportedOperationException",
            "registering over an existing table (overwrite = true) is not supported",
        ));
    }
    let table = state
        .db
        .catalog
        .register_table(&ident, request.metadata_location)
        .await?;
    tracing::info!(table = %ident, "table registered");
    Ok(Json(load_result(
        table.metadata_location().map(str::to_string),
        table.metadata().clone(),
    )))
}

async fn load_table(State(state): Shared, scope: Scope) -> ApiResult<Json<LoadTableResult>> {
    let ident = scope.table()?;
    match state.db.load(&ident).await? {
        Some(loaded) => Ok(Json(load_result(
            Some(loaded.location),
            loaded.metadata.as_ref().clone(),
        ))),
        None => Err(ApiError::no_table(&ident.to_string())),
    }
}

async fn table_exists(State(state): Shared, scope: Scope) -> ApiResult<StatusCode> {
    let ident = scope.table()?;
    Ok(match state.db.catalog.table_exists(&ident).await? {
        true => StatusCode::NO_CONTENT,
        false => StatusCode::NOT_FOUND,
    })
}

async fn drop_table(
    State(state): Shared,
    scope: Scope,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let ident = scope.table()?;
    let purge = query
        .get("purgeRequested")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if purge {
        if let Some(table) = state.db.load(&ident).await? {
            check_inside(&state, table.metadata.location(), "table location")?;
        }
        state.db.catalog.purge_table(&ident).await?;
    } else {
        state.db.catalog.drop_table(&ident).await?;
    }
    tracing::info!(table = %ident, purge, "table dropped");
    Ok(StatusCode::NO_CONTENT)
}

async fn rename_table(State(state): Shared, _scope: Scope, body: Bytes) -> ApiResult<StatusCode> {
    let request: RenameTableRequest = parse(&body)?;
    check_name(request.destination.name())?;
    state
        .db
        .catalog
        .rename_table(&request.source, &request.destination)
        .await?;
    tracing::info!(from = %request.source, to = %request.destination, "table renamed");
    Ok(StatusCode::NO_CONTENT)
}

/// Check the requirements on the table as it is, apply the updates, swap the pointer; a lost
/// swap checks again on the winner's state.
async fn commit_table(State(state): Shared, scope: Scope, body: Bytes) -> ApiResult<Response> {
    let ident = scope.table()?;
    let request: CommitTableRequest = parse(&body)?;
    if request
        .requirements
        .iter()
        .any(|r| matches!(r, TableRequirement::NotExist))
    {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "UnsupportedOperationException",
            "create transactions (assert-create) are not supported: create the table, then commit",
        ));
    }
    for _ in 0..SWAP_ATTEMPTS {
        let Some(current) = state.db.load(&ident).await? else {
            return Err(ApiError::no_table(&ident.to_string()));
        };
        for requirement in &request.requirements {
            requirement
                .check(Some(&current.metadata))
                .map_err(|e| ApiError::commit_failed(e.message().to_string()))?;
        }
        let mut builder = current
            .metadata
            .as_ref()
            .clone()
            .into_builder(Some(current.location.clone()));
        for update in request.updates.clone() {
            builder = update.apply(builder)?;
        }
        let staged = builder.build()?.metadata;
        if let Some(done) = state.db.swap(&ident, &current.location, &staged).await? {
            tracing::info!(
                table = %ident,
                snapshot = ?staged.current_snapshot_id(),
                "committed"
            );
            return Ok(Json(CommitTableResponse {
                metadata_location: done.location,
                metadata: staged,
            })
            .into_response());
        }
    }
    Err(ApiError::commit_failed(format!(
        "{SWAP_ATTEMPTS} concurrent commits won in a row; reload and try again"
    )))
}
