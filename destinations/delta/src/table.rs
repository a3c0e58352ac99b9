//! Where the table is, opening it, and the pipeline state its commits carry.
//!
//! Every commit of a run carries an application transaction (`txn` action: app id = the
//! pipeline's name, version = the run's sequence number) and, in its `commitInfo`, the
//! pipeline (`pipe.pipeline`), run (`pipe.runId`, `pipe.runSeq`) and the whole pipeline state
//! (`pipe.state`). The `txn` version survives checkpoints; the state is read from the commit
//! that set it.

use std::collections::HashMap;

use deltalake::kernel::CommitInfo;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use pipe_framework::State;
use url::Url;

use crate::error::{DeltaError, Result, delta};

/// `commitInfo` keys: pipe's vocabulary, the same in every format.
pub(crate) use pipe_framework::operations::keys::{
    PIPELINE as PIPELINE_KEY, RUN_ID as RUN_ID_KEY, RUN_SEQ as RUN_SEQ_KEY, STATE as STATE_KEY,
};
/// How releases before the shared vocabulary spelled the run's keys (still read).
const OLD_RUN_ID_KEY: &str = "pipe.runId";
const OLD_RUN_SEQ_KEY: &str = "pipe.runSeq";

/// A commit's `key` (or its older spelling `old`).
pub(crate) fn info_value<'a>(
    info: &'a std::collections::HashMap<String, serde_json::Value>,
    key: &str,
) -> Option<&'a serde_json::Value> {
    let old = match key {
        RUN_ID_KEY => OLD_RUN_ID_KEY,
        RUN_SEQ_KEY => OLD_RUN_SEQ_KEY,
        _ => key,
    };
    info.get(key).or_else(|| info.get(old))
}

/// Make `s3://`, `gs://` and `az://`/`abfss://` URLs known to delta-rs. Its crates register
/// themselves from static constructors, which a linker may drop from a binary that names
/// nothing else in them; registering again only replaces the same factories.
fn register_object_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        deltalake::aws::register_handlers(None);
        deltalake::gcp::register_handlers(None);
        deltalake::azure::register_handlers(None);
    });
}

/// A table location with its object store options.
#[derive(Debug, Clone)]
pub struct Location {
    /// The table root.
    pub url: Url,
    /// delta-rs storage options.
    pub options: HashMap<String, String>,
}

impl Location {
    /// `path` as a table URL: object store URLs as given, local paths made absolute.
    pub fn new(path: &str, options: HashMap<String, String>) -> Result<Self, DeltaError> {
        register_object_stores();
        let url = if path.contains("://") {
            Url::parse(path)
                .map_err(|e| DeltaError::Config(format!("path = \"{path}\" is not a URL: {e}")))?
        } else {
            let absolute = std::path::absolute(path).map_err(|e| {
                DeltaError::Config(format!("path = \"{path}\" cannot be resolved: {e}"))
            })?;
            Url::from_directory_path(&absolute).map_err(|()| {
                DeltaError::Config(format!("path = \"{path}\" is not a usable directory path"))
            })?
        };
        Ok(Self { url, options })
    }

    /// The local directory, for `file://` tables.
    pub(crate) fn local_dir(&self) -> Option<std::path::PathBuf> {
        (self.url.scheme() == "file")
            .then(|| self.url.to_file_path().ok())
            .flatten()
    }

    /// Whether this is a local table whose directory does not exist (then there is no table,
    /// and read-only calls must not create the directory).
    pub(crate) fn missing_locally(&self) -> bool {
        self.local_dir().is_some_and(|d| !d.exists())
    }

    /// Create the local directory a new table goes into.
    pub(crate) fn create_local_dir(&self) -> Result<()> {
        if let Some(dir) = self.local_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| {
                DeltaError::Config(format!(
                    "cannot create the table directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        Ok(())
    }

    /// An unloaded handle on the table.
    pub(crate) fn handle(&self) -> Result<DeltaTable> {
        DeltaTableBuilder::from_url(self.url.clone())
            .and_then(|b| b.with_storage_options(self.options.clone()).build())
            .map_err(delta(format!("opening the Delta table at {}", self.url)))
    }

    /// The table at its newest version; `None` when there is no table there yet.
    pub(crate) async fn open(&self) -> Result<Option<DeltaTable>> {
        if self.missing_locally() {
            return Ok(None);
        }
        let mut table = self.handle()?;
        match table.load().await {
            Ok(()) => Ok(Some(table)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(delta(format!("reading the Delta log at {}", self.url))(e)),
        }
    }

    /// The table, which must exist (table operations).
    pub(crate) async fn open_existing(&self) -> Result<DeltaTable> {
        self.open()
            .await?
            .ok_or_else(|| DeltaError::Config(format!("there is no Delta table at {}", self.url)))
    }
}

/// The last run sequence number `pipeline` committed to `table` (its `txn` version).
pub(crate) async fn committed_seq(table: &DeltaTable, pipeline: &str) -> Result<Option<i64>> {
    let state = table.snapshot().map_err(delta("reading the table state"))?;
    state
        .transaction_version(table.log_store().as_ref(), pipeline)
        .await
        .map_err(delta("reading the table's application transactions"))
}

/// The state `pipeline`'s last committed run stored in `table`, and that run's sequence
/// number (0: none yet).
pub(crate) async fn committed_state(table: &DeltaTable, pipeline: &str) -> Result<(State, i64)> {
    let Some(seq) = committed_seq(table, pipeline).await? else {
        return Ok((State::new(), 0));
    };
    let Some(info) = find_run(table, pipeline, seq).await? else {
        return Err(DeltaError::Config(format!(
            "the table records run {seq} of pipeline `{pipeline}` (its txn version), but that \
             run's commit is no longer in the Delta log (expired by \
             delta.logRetentionDuration?), so its state (cursor) cannot be read"
        )));
    };
    let mut state = State::new();
    if let Some(serde_json::Value::Object(map)) = info.info.get(STATE_KEY) {
        for (k, v) in map {
            if let Some(v) = v.as_str() {
                state.insert(k.clone(), v.to_string());
            }
        }
    }
    Ok((state, seq))
}

/// The commit of run `seq` of `pipeline`, newest commits searched first.
pub(crate) async fn find_run(
    table: &DeltaTable,
    pipeline: &str,
    seq: i64,
) -> Result<Option<CommitInfo>> {
    let is_run = |info: &CommitInfo| {
        info.info.get(PIPELINE_KEY).and_then(|v| v.as_str()) == Some(pipeline)
            && info_value(&info.info, RUN_SEQ_KEY).and_then(serde_json::Value::as_i64) == Some(seq)
    };
    // Commits in the log (history skips commits without commitInfo, so stop by versions).
    let versions = table.version().map_or(0, |v| v.saturating_add(1));
    let mut limit: usize = 16;
    loop {
        let infos: Vec<CommitInfo> = table
            .history(Some(limit))
            .await
            .map_err(delta("reading the table history"))?
            .collect();
        if let Some(found) = infos.iter().find(|i| is_run(i)) {
            return Ok(Some(found.clone()));
        }
        if u64::try_from(limit).unwrap_or(u64::MAX) >= versions {
            return Ok(None);
        }
        limit = limit.saturating_mul(4);
    }
}

/// The version of the commit in `store`'s log (the table root) after version `after` whose
/// `commitInfo` names run `run_id`, read from the commit files as they are. `after = None`:
/// from version 0.
pub(crate) async fn find_commit(
    store: &dyn object_store::ObjectStore,
    after: Option<u64>,
    run_id: &str,
) -> std::result::Result<Option<u64>, object_store::Error> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::path::Path;
    let prefix = Path::from("_delta_log");
    let offset = after.map(|v| Path::from(format!("_delta_log/{v:020}.json")));
    let listed: Vec<object_store::ObjectMeta> = match &offset {
        Some(offset) => {
            store
                .list_with_offset(Some(&prefix), offset)
                .try_collect()
                .await?
        }
        None => store.list(Some(&prefix)).try_collect().await?,
    };
    let mut versions: Vec<(u64, Path)> = listed
        .into_iter()
        .filter_map(|meta| {
            let name = meta.location.filename()?;
            let digits = name.strip_suffix(".json")?;
            (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().ok())
                .flatten()
                .filter(|v| after.is_none_or(|a| *v > a))
                .map(|v| (v, meta.location))
        })
        .collect();
    versions.sort();
    for (version, path) in versions {
        let bytes = store.get(&path).await?.bytes().await?;
        let text = String::from_utf8_lossy(&bytes);
        let ours = text.lines().any(|line| {
            line.contains("commitInfo")
                && serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
                    v.get("commitInfo")
                        .and_then(|c| c.get(RUN_ID_KEY).or_else(|| c.get(OLD_RUN_ID_KEY)))
                        .and_then(serde_json::Value::as_str)
                        == Some(run_id)
                })
        });
        if ours {
            return Ok(Some(version));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;

    async fn put(store: &InMemory, name: &str, text: &str) {
        store
            .put(&Path::from(name), text.to_string().into())
            .await
            .expect("put");
    }

    #[tokio::test]
    async fn a_commit_is_found_in_the_raw_log_by_its_run_id() {
        let store = InMemory::new();
        let info = |run: &str| format!("{{\"commitInfo\":{{\"{RUN_ID_KEY}\":\"{run}\"}}}}\n");
        put(&store, "_delta_log/00000000000000000000.json", &info("r0")).await;
        // A stats value no reader can parse does not stop the lookup: only commitInfo is read.
        let broken = format!("{{\"add\":{{\"stats\":\"1e+28\"}}}}\n{}", info("r1"));
        put(&store, "_delta_log/00000000000000000001.json", &broken).await;
        put(
            &store,
            "_delta_log/00000000000000000001.checkpoint.parquet",
            "x",
        )
        .await;
        put(&store, "_delta_log/_last_checkpoint", "{}").await;
        assert_eq!(find_commit(&store, None, "r1").await.expect("ok"), Some(1));
        assert_eq!(find_commit(&store, None, "r0").await.expect("ok"), Some(0));
        assert_eq!(find_commit(&store, Some(0), "r0").await.expect("ok"), None);
        assert_eq!(
            find_commit(&store, Some(0), "r1").await.expect("ok"),
            Some(1)
        );
        assert_eq!(find_commit(&store, None, "r9").await.expect("ok"), None);
    }
}
