//! The `[destination]` table of `type = "iceberg"`.

use std::collections::BTreeMap;

use pipe_framework::Secret;
use serde::Deserialize;

/// Loads into an Apache Iceberg table. Common keys `mode` and `merge_keys` are documented with
/// the pipeline format; these are Iceberg's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergConfig {
    /// The catalog that tracks the table's current metadata. Default: the embedded SQL
    /// catalog `{ type = "sql", uri = "sqlite://.pipe/catalog.db", warehouse = ".pipe/warehouse" }`.
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// Target table, `namespace.table` (nested namespaces: `a.b.table`). The namespace and
    /// table are created on the first run.
    pub table: String,
    /// Partition spec used when the table is created: a list of `column` (identity),
    /// `year(col)`, `month(col)`, `day(col)`, `hour(col)`, `bucket(N, col)` or
    /// `truncate(W, col)` (the Iceberg spellings `bucket[N](col)`, `truncate[W](col)` also
    /// work). Ignored for an existing table, whose spec is kept.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Sort order recorded when the table is created: `column` or `column desc`, optionally
    /// followed by `nulls first` / `nulls last`.
    #[serde(default)]
    pub sort_order: Vec<String>,
    /// Columns each run's rows are sorted by before they are written, so every data file
    /// holds one contiguous range of them and a merge rewrites only the files its keys fall
    /// in. Default: the merge keys with `mode = "merge"`, else `sort_order`; `[]` writes rows
    /// as they come. Sorting holds 64 MiB in memory and spills the rest to temp files.
    #[serde(default)]
    pub cluster_by: Option<Vec<String>>,
    /// With `mode = "replace"`: replace only the partitions this run writes (dynamic partition
    /// overwrite) instead of the whole table. Needs a partitioned table.
    #[serde(default)]
    pub replace_partitions: bool,
    /// Target size of each data file in MB before the writer rolls to a new file
    /// (default 512).
    #[serde(
        default = "default_target_file_size_mb",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 65_536>"
    )]
    pub target_file_size_mb: u64,
    /// Rows per Parquet row group (default 262144): bounds the memory each open data file
    /// buffers.
    #[serde(
        default = "default_row_group_rows",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 67_108_864>"
    )]
    pub row_group_rows: usize,
    /// Data files written at the same time, each by its own task (default: one per core, at
    /// most 4). Each run writes at least this many files when it has that many batches.
    #[serde(
        default,
        deserialize_with = "pipe_framework::config::within_opt::<_, _, 1, 64>"
    )]
    pub writers: Option<usize>,
    /// Parquet compression: `zstd` (default, level 3), `zstd(N)`, `snappy`, `lz4`, `gzip` or
    /// `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Table properties set when the table is created (e.g. `{ "write.metadata.previous-versions-max" = "20" }`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Object-store settings for the table's files when the warehouse or table location is
    /// `s3://`, `gs://` or `az://`/`abfss://` (values are secrets). Iceberg's FileIO names
    /// (`s3.endpoint`, `s3.region`, `s3.access-key-id`, `s3.secret-access-key`,
    /// `s3.session-token`, `s3.path-style-access`, `adls.account-name`, `adls.account-key`,
    /// `gcs.service-account`) or object_store's (`aws_endpoint`, `AWS_ALLOW_HTTP`, …). Unset
    /// settings come from the standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    #[serde(default)]
    pub storage_options: BTreeMap<String, Secret>,
    /// How many times a commit that lost a race with another writer is restaged on the new
    /// table state and tried again (default 4).
    #[serde(
        default = "default_commit_retries",
        deserialize_with = "pipe_framework::config::within::<_, _, 0, 100>"
    )]
    pub commit_retries: u32,
}

/// Which catalog holds the table (`catalog.type`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CatalogConfig {
    /// A SQL database holding the catalog tables `iceberg_tables` and
    /// `iceberg_namespace_properties` (the layout pyiceberg's and Java's JDBC catalogs use).
    Sql {
        /// Database URL: `sqlite://path/catalog.db` (created if missing) or
        /// `postgres://user@host:5432/db`.
        #[serde(default = "default_sql_uri")]
        uri: Secret,
        /// Directory under which new tables are placed (`<warehouse>/<namespace>/<table>`).
        /// Local paths only in this release.
        #[serde(default = "default_warehouse")]
        warehouse: String,
        /// The catalog's name: rows in the catalog tables are keyed by it, so readers must use
        /// the same name (default `pipe`).
        #[serde(default = "default_catalog_name")]
        name: String,
    },
    /// An Iceberg REST catalog (Polaris, Lakekeeper, Gravitino, Unity, `pipe serve catalog`;
    /// no SigV4 signing, so not Glue's endpoint).
    Rest(RestCatalogConfig),
    /// A Hive Metastore (thrift): tables are Hive `EXTERNAL_TABLE`s with `table_type=ICEBERG`
    /// whose `metadata_location` parameter points at the current metadata, committed under a
    /// metastore lock as Iceberg's Java `HiveCatalog` does.
    Hive(HiveCatalogConfig),
    /// Project Nessie's Iceberg REST endpoint (`http://host:19120/iceberg`): a REST catalog
    /// whose prefix names the branch (`main`, or `main|warehouse`).
    Nessie(RestCatalogConfig),
}

/// The keys of `catalog = { type = "rest", ... }` and `{ type = "nessie", ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestCatalogConfig {
    /// The catalog's base URL, without `/v1` (`http://127.0.0.1:8181`,
    /// `http://nessie:19120/iceberg`).
    pub uri: String,
    /// The warehouse to ask the catalog for (sent as `?warehouse=` to `GET /v1/config`; a
    /// name or a location, as the catalog defines it).
    #[serde(default)]
    pub warehouse: Option<String>,
    /// The path prefix of every call after `/v1/config` (`/v1/{prefix}/namespaces/...`).
    /// Default: what the catalog's `/v1/config` says; for Nessie, the branch (and warehouse).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Nessie only: the branch to commit to (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
    /// A bearer token sent with every call (secret).
    #[serde(default)]
    pub token: Option<Secret>,
    /// OAuth2 client credentials `client_id:client_secret` (secret): exchanged for a token at
    /// `oauth2_server_uri` (default `<uri>/v1/oauth/tokens`), renewed before it expires.
    #[serde(default)]
    pub credential: Option<Secret>,
    /// Where `credential` is exchanged for a token (default `<uri>/v1/oauth/tokens`).
    #[serde(default)]
    pub oauth2_server_uri: Option<String>,
    /// The OAuth2 scope asked for with `credential` (default `catalog`).
    #[serde(default)]
    pub scope: Option<String>,
    /// Extra HTTP headers sent with every call (values are secrets: they may carry keys).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Create the table's namespace when it does not exist (default false: REST catalogs
    /// usually leave namespaces to their administrators, and a missing one is an error).
    #[serde(default)]
    pub create_namespace: bool,
    /// Seconds one call to the catalog may take (default 60).
    #[serde(
        default = "default_timeout_secs",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 3600>"
    )]
    pub timeout_secs: u64,
}

/// The keys of `catalog = { type = "hive", ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HiveCatalogConfig {
    /// The metastore's thrift address, `thrift://host:9083`.
    pub uri: String,
    /// Where new tables go when their database has no location: `<warehouse>/<db>.db/<table>`
    /// (a local directory, `s3://bucket/prefix`, `gs://…`, `az://…`). Default: the database's
    /// own location, as the metastore reports it.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Create the table's database when it does not exist (default true).
    #[serde(default = "default_true")]
    pub create_namespace: bool,
    /// Seconds to wait for the table's metastore lock before giving up (default 180, as Java's
    /// `iceberg.hive.lock-timeout-ms`). A lock left by a killed writer is released by the
    /// metastore after its `hive.txn.timeout` (default 300 s).
    #[serde(
        default = "default_lock_timeout_secs",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 86_400>"
    )]
    pub lock_timeout_secs: u64,
    /// Seconds one call to the metastore may take (default 60).
    #[serde(
        default = "default_timeout_secs",
        deserialize_with = "pipe_framework::config::within::<_, _, 1, 3600>"
    )]
    pub timeout_secs: u64,
}

fn default_true() -> bool {
    true
}

fn default_lock_timeout_secs() -> u64 {
    180
}

fn default_timeout_secs() -> u64 {
    60
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig::Sql {
            uri: default_sql_uri(),
            warehouse: default_warehouse(),
            name: default_catalog_name(),
        }
    }
}

fn default_sql_uri() -> Secret {
    Secret::new("sqlite://.pipe/catalog.db")
}

fn default_warehouse() -> String {
    ".pipe/warehouse".into()
}

fn default_catalog_name() -> String {
    "pipe".into()
}

fn default_target_file_size_mb() -> u64 {
    512
}

fn default_row_group_rows() -> usize {
    256 * 1024
}

fn default_compression() -> String {
    "zstd".into()
}

fn default_commit_retries() -> u32 {
    4
}
