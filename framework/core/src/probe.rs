//! Whether a file that does not exist yet (a database, a catalog, a state store) could be
//! created, checked without creating it or its directories: `pipe validate` and `check` must
//! change nothing.

use std::path::Path;

use crate::config::ConfigFile;
use crate::config::connections::Connections;
use crate::error::{Error, Result};
use crate::registry::{BuildContext, Registry};

/// Whether `path` could be created: its nearest existing ancestor is a directory this process
/// can write to (a probe file is created there and removed at once). `what` names the file in
/// the error (`DuckDB database`, `state store`).
pub fn creatable(path: &Path, what: &str) -> Result<()> {
    let dir = path
        .ancestors()
        .skip(1)
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Error::user(format!(
            "cannot create {what} {}: {} is not a directory",
            path.display(),
            dir.display()
        )));
    }
    let probe = dir.join(format!(".pipe-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::external(format!(
            "cannot create {what} {}: {} is not writable: {e}",
            path.display(),
            dir.display()
        ))),
    }
}

/// `pipe connections test NAME`: build the named connection's source or destination (by its
/// `type`) with only the connection's keys (plus the type's probe keys, e.g. a trivial query)
/// and reach it — a source's schema, a destination's check — changing nothing. Returns what
/// was reached (`postgres source`, `duckdb destination …`).
pub async fn connection(registry: &Registry, name: &str) -> Result<String> {
    let connections = Connections::global()?;
    let connection = connections
        .get(name)
        .ok_or_else(|| Error::user(connections.unknown(name)))?;
    let kind = connection
        .kind()
        .ok_or_else(|| Error::user(format!("connection `{name}` has no `type`")))?;
    let keys: Vec<String> = connection.masked().into_iter().map(|(k, _)| k).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let (is_destination, probe) = registry.probe(kind, &keys).ok_or_else(|| {
        Error::user(format!(
            "connection `{name}` has type `{kind}`, which this pipe has no source or \
             destination for"
        ))
    })?;
    let section = if is_destination {
        "destination"
    } else {
        "source"
    };
    let quote = |v: &str| toml::Value::String(v.to_string()).to_string();
    let mut text = format!("[{section}]\nconnection = {}\n", quote(name));
    for (key, value) in probe {
        text.push_str(&format!("{key} = {}\n", quote(value)));
    }
    let file = ConfigFile::new(format!("<connection {name}>"), text);
    let mut root = file.parse()?;
    let mut section = root
        .take(section)
        .ok_or_else(|| Error::internal("the probe section"))?;
    crate::config::connections::apply(&mut section)?;
    // what the pipeline takes for itself, not the connector (a connection may hold them)
    for key in ["type", "mode", "merge_keys", "allow_empty"] {
        section.take(key);
    }
    let ctx = BuildContext {
        pipeline_file: connection.file.clone(),
        pipeline: format!("connection-{name}"),
        file: file.clone(),
    };
    if is_destination {
        let destination = registry
            .build_destination(kind, section, &ctx)
            .ok_or_else(|| Error::internal("the destination type vanished"))??;
        destination.check().await?;
        Ok(format!("destination {}", destination.describe()))
    } else {
        let source = registry
            .build_source(kind, section, &ctx)
            .ok_or_else(|| Error::internal("the source type vanished"))??;
        source.schema().await?;
        Ok(format!("source {}", source.describe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_under_a_file_or_a_read_only_place_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(creatable(&dir.path().join("a/b/c.db"), "db").is_ok());
        assert!(!dir.path().join("a").exists(), "nothing was created");
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let err = creatable(&file.join("c.db"), "db").expect_err("under a file");
        assert!(err.message().contains("is not a directory"), "{err:?}");
    }
}
