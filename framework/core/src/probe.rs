//! Whether a file that does not exist yet (a database, a catalog, a state store) could be
//! created, checked without creating it or its directories: `pipe validate` and `check` must
//! change nothing.

use std::path::Path;

use crate::error::{Error, Result};

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
