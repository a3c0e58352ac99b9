//! The table metadata of a relocated table: the source's metadata JSON with every path under
//! the old prefix moved under the new one, and — for a relocated table that already exists —
//! the same change as REST catalog updates.

use std::collections::{HashMap, HashSet};

use iceberg::spec::{MAIN_BRANCH, SnapshotReference, TableMetadata};
use iceberg::{TableRequirement, TableUpdate};
use serde_json::Value;

use crate::error::{IcebergError, Result};

/// Table properties a relocation records (a rerun checks them).
pub(crate) const FROM: &str = "pipe.relocated-from";
pub(crate) const TO: &str = "pipe.relocated-to";
pub(crate) const SOURCE: &str = "pipe.relocated-source-metadata";

/// Paths under `from` move under `to`. A bare absolute path also matches its `file:` URL
/// forms, and keeps the form it had (when `to` is a path too).
#[derive(Debug, Clone)]
pub(crate) struct Prefixes {
    pub from: String,
    pub to: String,
    pairs: Vec<(String, String)>,
}

impl Prefixes {
    pub(crate) fn new(from: &str, to: &str) -> Result<Self> {
        let from = from.trim_end_matches('/');
        let to = to.trim_end_matches('/');
        if from.is_empty() || to.is_empty() {
            return Err(IcebergError::Config(
                "--from and --to must both be a path or URL prefix (not `/` or empty)".into(),
            ));
        }
        if from == to || under(to, from).is_some() || under(from, to).is_some() {
            return Err(IcebergError::Config(format!(
                "--from {from} and --to {to} overlap: the relocated table must be in another place"
            )));
        }
        let mut pairs = vec![(from.to_string(), to.to_string())];
        if from.starts_with('/') {
            for form in ["file://", "file:"] {
                let moved = if to.starts_with('/') {
                    format!("{form}{to}")
                } else {
                    to.to_string()
                };
                pairs.push((format!("{form}{from}"), moved));
            }
        }
        Ok(Self {
            from: from.to_string(),
            to: to.to_string(),
            pairs,
        })
    }

    /// `path` under the new prefix; `None` if it is not under the old one.
    pub(crate) fn map(&self, path: &str) -> Option<String> {
        self.pairs
            .iter()
            .find_map(|(from, to)| under(path, from).map(|rest| format!("{to}{rest}")))
    }

    /// [`Self::map`], or an error naming `what` when `path` is outside the old prefix.
    pub(crate) fn require(&self, path: &str, what: &str) -> Result<String> {
        self.map(path).ok_or_else(|| {
            IcebergError::Config(format!(
                "{what} {path} is not under --from {}: the copy would still read it from its \
                 old place",
                self.from
            ))
        })
    }
}

/// What follows `prefix` in `path` (`""` or starting with `/`), at a path-segment boundary.
fn under<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The table location `location` under the new prefix; an error when `--from` does not
/// hold it.
pub(crate) fn new_location(location: &str, prefixes: &Prefixes) -> Result<String> {
    prefixes.map(location).ok_or_else(|| {
        IcebergError::Config(format!(
            "--from {} matches nothing: the table is at {location}",
            prefixes.from
        ))
    })
}

/// A statistics file (Puffin) the metadata names, at the new place.
#[derive(Debug, Clone)]
pub(crate) struct Statistics {
    pub path: String,
    pub size: Option<u64>,
}

/// Rewrite the source's metadata JSON in place: `location`, path-valued properties, each
/// snapshot's manifest list (`lists`: snapshot id → relocated list), the metadata log and
/// statistics files; record the relocation in the properties. Returns the statistics files.
pub(crate) fn relocate(
    metadata: &mut Value,
    prefixes: &Prefixes,
    lists: &HashMap<i64, String>,
    source_location: &str,
) -> Result<Vec<Statistics>> {
    let location = metadata
        .get("location")
        .and_then(Value::as_str)
        .ok_or_else(|| IcebergError::Config("the source metadata has no location".into()))?;
    metadata["location"] = Value::String(new_location(location, prefixes)?);
    if let Some(Value::Object(props)) = metadata.get_mut("properties") {
        for value in props.values_mut() {
            if let Some(moved) = value.as_str().and_then(|v| prefixes.map(v)) {
                *value = Value::String(moved);
            }
        }
    }
    if !metadata["properties"].is_object() {
        metadata["properties"] = Value::Object(Default::default());
    }
    let props = &mut metadata["properties"];
    props[FROM] = Value::String(prefixes.from.clone());
    props[TO] = Value::String(prefixes.to.clone());
    props[SOURCE] = Value::String(source_location.to_string());
    if let Some(Value::Array(snapshots)) = metadata.get_mut("snapshots") {
        for snapshot in snapshots {
            let id = snapshot.get("snapshot-id").and_then(Value::as_i64);
            let Some(list) = id.and_then(|id| lists.get(&id)) else {
                return Err(IcebergError::Config(format!(
                    "snapshot {} has no manifest list (a format-version 1 table with inline \
                     manifests cannot be relocated)",
                    id.unwrap_or_default()
                )));
            };
            snapshot["manifest-list"] = Value::String(list.clone());
        }
    }
    if let Some(Value::Array(log)) = metadata.get_mut("metadata-log") {
        for entry in log {
            if let Some(moved) = entry
                .get("metadata-file")
                .and_then(Value::as_str)
                .and_then(|f| prefixes.map(f))
            {
                entry["metadata-file"] = Value::String(moved);
            }
        }
    }
    let mut statistics = Vec::new();
    for key in ["statistics", "partition-statistics"] {
        if let Some(Value::Array(files)) = metadata.get_mut(key) {
            for file in files {
                let Some(path) = file.get("statistics-path").and_then(Value::as_str) else {
                    continue;
                };
                let moved = prefixes.require(path, "statistics file")?;
                statistics.push(Statistics {
                    path: moved.clone(),
                    size: file.get("file-size-in-bytes").and_then(Value::as_u64),
                });
                file["statistics-path"] = Value::String(moved);
            }
        }
    }
    Ok(statistics)
}

/// The named branches and tags of a metadata JSON.
fn refs(metadata: &Value) -> Result<HashMap<String, SnapshotReference>> {
    match metadata.get("refs") {
        None => Ok(HashMap::new()),
        Some(refs) => serde_json::from_value(refs.clone())
            .map_err(|e| IcebergError::Config(format!("the table's refs: {e}"))),
    }
}

/// The change from `base` (the relocated table as its catalog has it) to `staged` (the new
/// relocation) as REST updates, and the requirements `base` must still meet. `base_json` /
/// `staged_json` are the same metadata as JSON (for the refs).
pub(crate) fn updates(
    base: &TableMetadata,
    base_json: &Value,
    staged: &TableMetadata,
    staged_json: &Value,
) -> Result<(Vec<TableUpdate>, Vec<TableRequirement>)> {
    let mut out = Vec::new();
    let known_schemas: HashSet<i32> = base.schemas_iter().map(|s| s.schema_id()).collect();
    for schema in staged.schemas_iter() {
        if !known_schemas.contains(&schema.schema_id()) {
            out.push(TableUpdate::AddSchema {
                schema: schema.as_ref().clone(),
            });
        }
    }
    if staged.current_schema_id() != base.current_schema_id() {
        out.push(TableUpdate::SetCurrentSchema {
            schema_id: staged.current_schema_id(),
        });
    }
    let known_specs: HashSet<i32> = base.partition_specs_iter().map(|s| s.spec_id()).collect();
    for spec in staged.partition_specs_iter() {
        if !known_specs.contains(&spec.spec_id()) {
            out.push(TableUpdate::AddSpec {
                spec: spec.as_ref().clone().into_unbound(),
            });
        }
    }
    if staged.default_partition_spec_id() != base.default_partition_spec_id() {
        out.push(TableUpdate::SetDefaultSpec {
            spec_id: staged.default_partition_spec_id(),
        });
    }
    let kept: HashSet<i64> = staged.snapshots().map(|s| s.snapshot_id()).collect();
    let gone: Vec<i64> = base
        .snapshots()
        .map(|s| s.snapshot_id())
        .filter(|id| !kept.contains(id))
        .collect();
    let (base_refs, staged_refs) = (refs(base_json)?, refs(staged_json)?);
    for name in base_refs.keys() {
        if !staged_refs.contains_key(name) {
            out.push(TableUpdate::RemoveSnapshotRef {
                ref_name: name.clone(),
            });
        }
    }
    if !gone.is_empty() {
        out.push(TableUpdate::RemoveSnapshots { snapshot_ids: gone });
    }
    let mut new: Vec<_> = staged
        .snapshots()
        .filter(|s| base.snapshot_by_id(s.snapshot_id()).is_none())
        .collect();
    new.sort_by_key(|s| s.sequence_number());
    for snapshot in new {
        out.push(TableUpdate::AddSnapshot {
            snapshot: snapshot.as_ref().clone(),
        });
    }
    let mut names: Vec<&String> = staged_refs.keys().collect();
    names.sort();
    for name in names {
        let reference = &staged_refs[name];
        if base_refs.get(name) != Some(reference) {
            out.push(TableUpdate::SetSnapshotRef {
                ref_name: name.clone(),
                reference: reference.clone(),
            });
        }
    }
    let changed: HashMap<String, String> = staged
        .properties()
        .iter()
        .filter(|(k, v)| base.properties().get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !changed.is_empty() {
        out.push(TableUpdate::SetProperties { updates: changed });
    }
    let requirements = vec![
        TableRequirement::UuidMatch { uuid: base.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN_BRANCH.to_string(),
            snapshot_id: base.current_snapshot_id(),
        },
    ];
    Ok((out, requirements))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments_and_keep_the_url_form() {
        let p = Prefixes::new("/data/wh/", "/dr/wh").unwrap();
        assert_eq!(
            p.map("/data/wh/t/m.avro").as_deref(),
            Some("/dr/wh/t/m.avro")
        );
        assert_eq!(
            p.map("file:///data/wh/t/m.avro").as_deref(),
            Some("file:///dr/wh/t/m.avro")
        );
        assert_eq!(p.map("/data/wh2/t"), None);
        assert_eq!(p.map("/other/wh/t"), None);
        assert!(p.require("/elsewhere/f.parquet", "data file").is_err());
        assert!(Prefixes::new("/data/wh", "/data/wh/copy").is_err());
        assert!(Prefixes::new("/", "/x").is_err());
        let up = Prefixes::new("/data/wh", "s3://b/wh").unwrap();
        assert_eq!(up.map("file:///data/wh/f").as_deref(), Some("s3://b/wh/f"));
        let s3 = Prefixes::new("s3://a/wh", "s3://b/wh").unwrap();
        assert_eq!(s3.map("s3://a/wh/f").as_deref(), Some("s3://b/wh/f"));
        assert_eq!(s3.map("/a/wh/f"), None);
    }

    #[test]
    fn metadata_paths_move_and_the_relocation_is_recorded() {
        let mut metadata = serde_json::json!({
            "location": "/data/wh/t",
            "properties": { "write.data.path": "/data/wh/t/data", "owner": "x" },
            "snapshots": [{ "snapshot-id": 7, "manifest-list": "/data/wh/t/metadata/snap-7.avro" }],
            "metadata-log": [{ "metadata-file": "/data/wh/t/metadata/00000-a.metadata.json", "timestamp-ms": 1 }],
            "statistics": [{ "snapshot-id": 7, "statistics-path": "/data/wh/t/metadata/s.puffin", "file-size-in-bytes": 3 }]
        });
        let p = Prefixes::new("/data/wh", "/dr/wh").unwrap();
        let lists = HashMap::from([(7, "/dr/wh/t/metadata/snap-7.r.avro".to_string())]);
        let stats = relocate(&mut metadata, &p, &lists, "/data/wh/t/metadata/v.json").unwrap();
        assert_eq!(metadata["location"], "/dr/wh/t");
        assert_eq!(metadata["properties"]["write.data.path"], "/dr/wh/t/data");
        assert_eq!(metadata["properties"]["owner"], "x");
        assert_eq!(metadata["properties"][FROM], "/data/wh");
        assert_eq!(
            metadata["snapshots"][0]["manifest-list"],
            "/dr/wh/t/metadata/snap-7.r.avro"
        );
        assert_eq!(
            metadata["metadata-log"][0]["metadata-file"],
            "/dr/wh/t/metadata/00000-a.metadata.json"
        );
        assert_eq!(stats[0].path, "/dr/wh/t/metadata/s.puffin");
        let other = Prefixes::new("/nowhere", "/dr").unwrap();
        let err = relocate(&mut metadata.clone(), &other, &lists, "v").unwrap_err();
        assert!(err.to_string().contains("matches nothing"), "{err}");
    }
}
