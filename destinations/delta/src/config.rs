//! The `[destination]` table of `type = "delta"`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Loads into a Delta Lake table. Common keys `mode` and `merge_keys` are documented with the
/// pipeline format; these are Delta's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaConfig {
    /// Table location: a local directory (created on the first run), or an object store URL
    /// `s3://bucket/path`, `gs://bucket/path`, `az://container/path` (also `abfss://`), whose
    /// credentials come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) or
    /// `storage_options`.
    pub path: String,
    /// Partition columns (Hive-style directories, identity values) used when the table is
    /// created. Ignored for an existing table, whose partitioning is kept.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Columns each run's rows are sorted by (after the partition columns) before they are
    /// written, so every data file holds one contiguous range of them and a merge rewrites
    /// only the files its keys fall in. Default: the merge keys with `mode = "merge"`, else
    /// none; `[]` writes rows as they come. Sorting holds 64 MiB in memory and spills the
    /// rest to temp files.
    #[serde(default)]
    pub cluster_by: Option<Vec<String>>,
    /// With `mode = "replace"`: a SQL predicate (`region = 'eu' AND day >= '2024-01-01'`);
    /// only rows matching it are replaced, and every incoming row must match it. Without it,
    /// `replace` overwrites the whole table.
    #[serde(default)]
    pub replace_where: Option<String>,
    /// Table properties set when the table is created, e.g. `"delta.appendOnly" = "true"`,
    /// `"delta.checkpointInterval" = "20"`, `"delta.logRetentionDuration" = "interval 7 days"`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Object store options passed to delta-rs (e.g. `AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`); unset keys come from the environment.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Target size of each data file in MB before the writer rolls to a new file
    /// (default 128).
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
    /// most 4).
    #[serde(
        default,
        deserialize_with = "pipe_framework::config::within_opt::<_, _, 1, 64>"
    )]
    pub writers: Option<usize>,
    /// Parquet compression: `zstd` (default, level 3), `zstd(N)`, `snappy`, `lz4`, `gzip` or
    /// `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// How many times a commit that lost a race with another writer is checked against the
    /// winner and tried again (default 10). Appends never conflict with appends; a merge or
    /// replace that read files another writer changed fails instead.
    #[serde(
        default = "default_commit_retries",
        deserialize_with = "pipe_framework::config::within::<_, _, 0, 100>"
    )]
    pub commit_retries: usize,
    /// Table maintenance run after a successful commit.
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
}

/// `[destination.maintenance]`: post-steps after this pipeline's runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Compact small files (`pipe table optimize`) after every N-th committed run of this
    /// pipeline (counted by its transaction version). Unset: never.
    #[serde(
        default,
        deserialize_with = "pipe_framework::config::within_opt::<_, _, 1, 1_000_000>"
    )]
    pub optimize_every_runs: Option<u64>,
    /// Z-order the compaction by these columns instead of bin-packing.
    #[serde(default)]
    pub zorder_by: Vec<String>,
    /// After the optimize, vacuum files unreferenced for longer than this many hours
    /// (at least 168, Delta's default retention). Unset: no vacuum.
    #[serde(
        default,
        deserialize_with = "pipe_framework::config::within_opt::<_, _, 0, 876_000>"
    )]
    pub vacuum_retain_hours: Option<u64>,
}

fn default_target_file_size_mb() -> u64 {
    128
}

fn default_row_group_rows() -> usize {
    256 * 1024
}

fn default_compression() -> String {
    "zstd".into()
}

fn default_commit_retries() -> usize {
    10
}
