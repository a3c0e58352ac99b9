//! Named connections: `connections.toml` holds `[connections.<name>]` tables (a `type` and
//! the keys of a `[source]` or `[destination]` of that type, `${ENV}` references allowed);
//! a pipeline section says `connection = "<name>"` and gets every key it does not set
//! itself. Files, first match wins per name: `$PIPE_CONNECTIONS` if set (only that file),
//! else `./connections.toml`, then `$XDG_CONFIG_HOME/pipe/connections.toml` (default
//! `~/.config/pipe/connections.toml`).
//!
//! The files are read once per process.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{Error, Result};

/// One named connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Its name.
    pub name: String,
    /// The file it comes from.
    pub file: PathBuf,
    /// Its keys (`type` included), `${ENV}` references unresolved.
    table: DeTable<'static>,
}

impl Connection {
    /// Its `type`, if it has one.
    pub fn kind(&self) -> Option<&str> {
        self.string("type")
    }

    /// The text of its string key `key` as written (`${ENV}` references unresolved).
    pub fn string(&self, key: &str) -> Option<&str> {
        self.table.get(key).and_then(|v| v.get_ref().as_str())
    }

    /// Its keys with their values as TOML text, secrets masked (`pipe connections list`).
    pub fn masked(&self) -> Vec<(String, String)> {
        self.table
            .iter()
            .map(|(k, v)| {
                let key = k.get_ref().to_string();
                let text = match v.get_ref() {
                    DeValue::String(s) => {
                        let sensitive = ["password", "secret", "token", "key", "credential"]
                            .iter()
                            .any(|w| key.to_ascii_lowercase().contains(w));
                        if sensitive && !s.starts_with("${") {
                            "\"****\"".to_string()
                        } else {
                            format!("{:?}", crate::secret::redact(s))
                        }
                    }
                    DeValue::Table(_) => "{ … }".to_string(),
                    DeValue::Array(_) => "[ … ]".to_string(),
                    other => other.type_str().to_string(),
                };
                (key, text)
            })
            .collect()
    }

    /// Its keys as a TOML table, `${ENV}` references resolved (to build a section from it).
    pub fn resolved(&self, span: Range<usize>) -> Result<DeTable<'static>> {
        let mut value = Spanned::new(span.clone(), DeValue::Table(respan(&self.table, &span)));
        super::interpolate(&mut value, &mut |name| std::env::var(name).ok()).map_err(
            |(_, msg)| {
                Error::user(format!(
                    "connection `{}` ({}): {msg}",
                    self.name,
                    self.file.display()
                ))
            },
        )?;
        match value.into_inner() {
            DeValue::Table(t) => Ok(t),
            _ => Err(Error::internal("a connection is not a table")),
        }
    }
}

/// `table` with every span set to `span` (the `connection = …` key that brought it).
fn respan(table: &DeTable<'static>, span: &Range<usize>) -> DeTable<'static> {
    table
        .iter()
        .map(|(k, v)| {
            (
                Spanned::new(span.clone(), k.get_ref().clone()),
                Spanned::new(span.clone(), respan_value(v.get_ref(), span)),
            )
        })
        .collect()
}

fn respan_value(value: &DeValue<'static>, span: &Range<usize>) -> DeValue<'static> {
    match value {
        DeValue::Table(t) => DeValue::Table(respan(t, span)),
        DeValue::Array(items) => DeValue::Array(
            items
                .iter()
                .map(|i| Spanned::new(span.clone(), respan_value(i.get_ref(), span)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every named connection this process can see.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    by_name: BTreeMap<String, Connection>,
    /// The files looked for, in order.
    pub searched: Vec<PathBuf>,
}

impl Connections {
    /// The connections of this process (read on first use).
    pub fn global() -> Result<&'static Connections> {
        static LOADED: OnceLock<std::result::Result<Connections, String>> = OnceLock::new();
        LOADED
            .get_or_init(|| Connections::read(&Self::files()).map_err(|e| e.chain().join(": ")))
            .as_ref()
            .map_err(|e| Error::user(e.clone()))
    }

    /// The files to read, in order of precedence.
    pub fn files() -> Vec<PathBuf> {
        if let Some(one) = std::env::var_os("PIPE_CONNECTIONS") {
            return vec![PathBuf::from(one)];
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
        let mut files = vec![PathBuf::from("connections.toml")];
        files.extend(config.map(|c| c.join("pipe").join("connections.toml")));
        files
    }

    /// Read `files` (missing ones skipped; an earlier file's connection wins).
    pub fn read(files: &[PathBuf]) -> Result<Self> {
        let mut out = Connections {
            searched: files.to_vec(),
            ..Self::default()
        };
        for file in files {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::from(e)
                        .context(format!("cannot read connections file {}", file.display())));
                }
            };
            // The parsed tree borrows its text: the (small) file is kept for the process.
            let text: &'static str = Box::leak(text.into_boxed_str());
            let config = super::ConfigFile::new(file, text);
            let root = DeTable::parse(text).map_err(|e| {
                config.error_at(e.span().unwrap_or(0..0), "", e.message().to_string())
            })?;
            for (key, value) in root.into_inner() {
                if key.get_ref() != "connections" {
                    return Err(config.error_at(
                        key.span(),
                        key.get_ref(),
                        "expected only [connections.<name>] tables",
                    ));
                }
                let span = value.span();
                let DeValue::Table(named) = value.into_inner() else {
                    return Err(config.error_at(span, "connections", "expected a table"));
                };
                for (name, table) in named {
                    let span = table.span();
                    let DeValue::Table(table) = table.into_inner() else {
                        let key = format!("connections.{}", name.get_ref());
                        return Err(config.error_at(span, &key, "expected a table"));
                    };
                    let name = name.get_ref().to_string();
                    out.by_name.entry(name.clone()).or_insert(Connection {
                        name,
                        file: file.clone(),
                        table,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The connection `name`.
    pub fn get(&self, name: &str) -> Option<&Connection> {
        self.by_name.get(name)
    }

    /// Every connection, by name.
    pub fn all(&self) -> impl Iterator<Item = &Connection> {
        self.by_name.values()
    }

    /// The error for an unknown connection `name`: the known ones and where they were looked
    /// for.
    pub fn unknown(&self, name: &str) -> String {
        let known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        let files: Vec<String> = self
            .searched
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        if known.is_empty() {
            format!(
                "unknown connection `{name}`: no connections are defined (looked in {})",
                files.join(", ")
            )
        } else {
            format!(
                "unknown connection `{name}`; known: {} (from {})",
                known.join(", "),
                files.join(", ")
            )
        }
    }
}

/// Add the keys of the section's `connection` (if it names one) that it does not set.
pub(crate) fn apply<'a>(section: &mut super::Section<'a>) -> Result<()> {
    let Some((name, span)) = section.take_str("connection")? else {
        return Ok(());
    };
    let connections = Connections::global()?;
    let Some(connection) = connections.get(&name) else {
        return Err(section.error_at(span, "connection", connections.unknown(&name)));
    };
    let resolved = connection
        .resolved(span.clone())
        .map_err(|e| section.error_at(span.clone(), "connection", e.message().to_string()))?;
    section.insert_missing(resolved);
    Ok(())
}
