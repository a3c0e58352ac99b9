//! Reading files as they are at a git revision (`pipe check --against REF:PATH`).

use std::path::Path;

use pipe_quality::ContractFiles;

/// Files as they are at a git revision.
pub(crate) struct GitFiles {
    reference: String,
}

impl GitFiles {
    /// Files at revision `reference`.
    pub(crate) fn new(reference: &str) -> Self {
        Self {
            reference: reference.to_string(),
        }
    }
}

impl ContractFiles for GitFiles {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        let object = format!("{}:{}", self.reference, git_path(path));
        let output = std::process::Command::new("git")
            .args(["show", &object])
            .output()?;
        if !output.status.success() {
            return Err(std::io::Error::other(format!(
                "git show {object} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        String::from_utf8(output.stdout)
            .map_err(|_| std::io::Error::other(format!("{object} is not UTF-8 text")))
    }
}

/// `path` as git names it in `REF:PATH`: `..` resolved lexically (git does not take
/// `dir/../file`), a leading `./` (relative to the current directory) kept.
fn git_path(path: &Path) -> String {
    use std::path::Component;
    let mut parts: Vec<String> = Vec::new();
    let relative = path.starts_with(".");
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if parts.last().is_some_and(|p| p != "..") => {
                parts.pop();
            }
            other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
        }
    }
    let joined = parts.join("/");
    if relative {
        format!("./{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::git_path;
    use std::path::Path;

    #[test]
    fn paths_are_normalized_for_git() {
        assert_eq!(
            git_path(Path::new("pipelines/../contracts/x.toml")),
            "contracts/x.toml"
        );
        assert_eq!(git_path(Path::new("./a/b.toml")), "./a/b.toml");
        assert_eq!(git_path(Path::new("../x.toml")), "../x.toml");
        assert_eq!(git_path(Path::new("a/./b/../c.json")), "a/c.json");
    }
}
