//! Manifests and manifest lists rewritten as generic Avro records: every field, the writer
//! schema and the file's key-value metadata (`schema`, `partition-spec`, `format-version`,
//! `content`, …) are kept as they were; only the paths change (and, in a manifest list, the
//! length of each rewritten manifest). Going through the iceberg crate's typed readers and
//! writers instead would drop what that crate does not model.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::{Codec, DeflateSettings, Reader, Writer};

use crate::error::{IcebergError, Result, data};

/// A data or delete file a manifest says is live in its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Referenced {
    /// Its path at the new place.
    pub path: String,
    /// `file_size_in_bytes`.
    pub size: u64,
}

/// A manifest rewritten.
#[derive(Debug)]
pub(super) struct RewrittenManifest {
    pub bytes: Vec<u8>,
    /// The files of its `ADDED` and `EXISTING` entries.
    pub files: Vec<Referenced>,
}

/// The path of every manifest a manifest list names, in order.
pub(super) fn manifest_paths(list: &[u8], name: &str) -> Result<Vec<String>> {
    let reader = Reader::new(list).map_err(data(format!("reading manifest list {name}")))?;
    let mut out = Vec::new();
    for record in reader {
        let record = record.map_err(data(format!("reading manifest list {name}")))?;
        out.push(string(&record, "manifest_path", name)?.to_string());
    }
    Ok(out)
}

/// `list` with every `manifest_path` replaced by its relocated manifest and its
/// `manifest_length` by that file's length. `relocated`: source path → (new path, length).
pub(super) fn rewrite_manifest_list(
    list: &[u8],
    name: &str,
    relocated: &HashMap<String, (String, u64)>,
) -> Result<Vec<u8>> {
    rewrite(list, name, |record| {
        let path = string(record, "manifest_path", name)?.to_string();
        let Some((new_path, length)) = relocated.get(&path) else {
            return Err(IcebergError::Internal(format!(
                "manifest {path} of {name} was not relocated"
            )));
        };
        set(
            record,
            "manifest_path",
            Value::String(new_path.clone()),
            name,
        )?;
        let length = i64::try_from(*length).unwrap_or(i64::MAX);
        set(record, "manifest_length", Value::Long(length), name)
    })
}

/// `manifest` with every data and delete file path (and a deletion vector's
/// `referenced_data_file`) put through `relocate`.
pub(super) fn rewrite_manifest(
    manifest: &[u8],
    name: &str,
    relocate: &dyn Fn(&str) -> Result<String>,
) -> Result<RewrittenManifest> {
    let mut files = Vec::new();
    let bytes = rewrite(manifest, name, |entry| {
        // 0 EXISTING, 1 ADDED, 2 DELETED
        let live = !matches!(field(entry, "status"), Some(Value::Int(2)));
        let Some(file) = field_mut(entry, "data_file") else {
            return Err(malformed(name, "data_file"));
        };
        let path = relocate(string(file, "file_path", name)?)?;
        if live {
            let size = match field(file, "file_size_in_bytes") {
                Some(Value::Long(n)) => u64::try_from(*n).unwrap_or(0),
                _ => return Err(malformed(name, "file_size_in_bytes")),
            };
            files.push(Referenced {
                path: path.clone(),
                size,
            });
        }
        set(file, "file_path", Value::String(path), name)?;
        if let Some(Value::Union(_, inner)) = field_mut(file, "referenced_data_file")
            && let Value::String(referenced) = inner.as_ref()
        {
            let moved = relocate(referenced)?;
            **inner = Value::String(moved);
        }
        Ok(())
    })?;
    Ok(RewrittenManifest { bytes, files })
}

/// Read `bytes`, apply `change` to each record, write them back with the same schema and
/// key-value metadata (deflate-compressed, as Java and pyiceberg write manifests).
fn rewrite(
    bytes: &[u8],
    name: &str,
    mut change: impl FnMut(&mut Value) -> Result<()>,
) -> Result<Vec<u8>> {
    let what = || format!("reading {name}");
    let reader = Reader::new(bytes).map_err(data(what()))?;
    let schema = reader.writer_schema().clone();
    let metadata = reader.user_metadata().clone();
    let mut writer = Writer::with_codec(
        &schema,
        Vec::with_capacity(bytes.len() + 1024),
        Codec::Deflate(DeflateSettings::default()),
    );
    let mut keys: Vec<_> = metadata.into_iter().collect();
    keys.sort();
    for (key, value) in keys {
        writer
            .add_user_metadata(key, value)
            .map_err(data(format!("copying the metadata of {name}")))?;
    }
    for record in reader {
        let mut record = record.map_err(data(what()))?;
        change(&mut record)?;
        writer
            .append_value_ref(&record)
            .map_err(data(format!("rewriting {name}")))?;
    }
    writer
        .into_inner()
        .map_err(data(format!("rewriting {name}")))
}

fn field<'a>(record: &'a Value, name: &str) -> Option<&'a Value> {
    match record {
        Value::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        _ => None,
    }
}

fn field_mut<'a>(record: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    match record {
        Value::Record(fields) => fields.iter_mut().find(|(n, _)| n == name).map(|(_, v)| v),
        _ => None,
    }
}

/// A required string field.
fn string<'a>(record: &'a Value, key: &str, file: &str) -> Result<&'a str> {
    match field(record, key) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(malformed(file, key)),
    }
}

fn set(record: &mut Value, key: &str, value: Value, file: &str) -> Result<()> {
    match field_mut(record, key) {
        Some(slot) => {
            *slot = value;
            Ok(())
        }
        None => Err(malformed(file, key)),
    }
}

fn malformed(file: &str, key: &str) -> IcebergError {
    IcebergError::Config(format!(
        "{file} is not an Iceberg manifest or manifest list: a record has no `{key}`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Schema;

    const LIST: &str = r#"{"type":"record","name":"manifest_file","fields":[
        {"name":"manifest_path","type":"string","field-id":500},
        {"name":"manifest_length","type":"long","field-id":501},
        {"name":"added_snapshot_id","type":["null","long"],"field-id":503}]}"#;

    fn list(paths: &[&str]) -> Vec<u8> {
        let schema = Schema::parse_str(LIST).unwrap();
        let mut writer = Writer::new(&schema, Vec::new());
        writer
            .add_user_metadata("format-version".into(), b"2")
            .unwrap();
        for p in paths {
            writer
                .append_value_ref(&Value::Record(vec![
                    ("manifest_path".into(), Value::String((*p).into())),
                    ("manifest_length".into(), Value::Long(10)),
                    (
                        "added_snapshot_id".into(),
                        Value::Union(1, Box::new(Value::Long(7))),
                    ),
                ]))
                .unwrap();
        }
        writer.into_inner().unwrap()
    }

    #[test]
    fn a_manifest_list_keeps_its_schema_metadata_and_other_fields() {
        let bytes = list(&["/old/m1.avro", "/old/m2.avro"]);
        assert_eq!(
            manifest_paths(&bytes, "l").unwrap(),
            ["/old/m1.avro", "/old/m2.avro"]
        );
        let relocated = HashMap::from([
            ("/old/m1.avro".to_string(), ("/new/m1.avro".to_string(), 99)),
            ("/old/m2.avro".to_string(), ("/new/m2.avro".to_string(), 5)),
        ]);
        let out = rewrite_manifest_list(&bytes, "l", &relocated).unwrap();
        let reader = Reader::new(&out[..]).unwrap();
        assert_eq!(reader.user_metadata()["format-version"], b"2");
        let records: Vec<Value> = reader.map(|r| r.unwrap()).collect();
        assert_eq!(
            field(&records[0], "manifest_path"),
            Some(&Value::String("/new/m1.avro".into()))
        );
        assert_eq!(
            field(&records[0], "manifest_length"),
            Some(&Value::Long(99))
        );
        assert_eq!(
            field(&records[1], "added_snapshot_id"),
            Some(&Value::Union(1, Box::new(Value::Long(7))))
        );
        let missing = HashMap::new();
        assert!(rewrite_manifest_list(&bytes, "l", &missing).is_err());
    }
}
