//! TOML configuration with spans: every error names the file, line, column and key path, and
//! shows the offending line.
//!
//! A pipeline file is parsed once into a spanned tree ([`toml::de::DeTable`]); `${ENV}`
//! references in string values are resolved in place (keeping their spans), and each section
//! is then deserialized into its typed, `deny_unknown_fields` struct by whoever owns it: the
//! framework for `[metadata]`, a connector's factory for `[source]` and `[destination]`.

pub mod connections;
mod interpolate;
mod mask;
mod range;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::error::{Error, Result};

pub use interpolate::interpolate;
pub use range::{within, within_opt};
/// A config value with its byte span in the file (for errors found after deserializing).
pub use toml::Spanned;
/// A TOML date, time or datetime value (`min = 2024-01-01`).
pub use toml::value::Datetime;

/// A configuration file's text, kept for error messages.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    text: String,
}

/// Where in a configuration file something went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the user named it.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Dotted key path, e.g. `source.csv.delimiter`; empty when the error is not about a key.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// The offending line with a caret marker under the span.
    pub snippet: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if !self.snippet.is_empty() {
            write!(f, "\n{}", self.snippet)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for Error {
    /// A user error with the located message; the [`ConfigError`] stays reachable through
    /// [`Error::find_source`] (for `pipe check --format github`, say).
    fn from(e: ConfigError) -> Self {
        Error::user(e.to_string()).with_source(e)
    }
}

/// The largest configuration file (pipeline, contract, JSON Schema) pipe reads: 10 MiB.
pub const MAX_CONFIG_BYTES: u64 = 10 * 1024 * 1024;

/// The text of a configuration file (a pipeline, a contract, a JSON Schema): a regular file of
/// at most [`MAX_CONFIG_BYTES`]. Devices (`/dev/zero`), pipes and directories are refused
/// before they are opened, so an endless or blocking input cannot hang or exhaust the run.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::{Error as IoError, ErrorKind as IoKind, Read};
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(IoError::new(
            IoKind::InvalidInput,
            "not a regular file (a directory, device or pipe); configuration must be a file",
        ));
    }
    let too_big = |n: u64| {
        IoError::new(
            IoKind::InvalidData,
            format!(
                "the file has {n} bytes; configuration files are limited to {MAX_CONFIG_BYTES} bytes"
            ),
        )
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes)
        .map_err(|e| IoError::new(IoKind::InvalidData, format!("not UTF-8 text: {e}")))
}

impl ConfigFile {
    /// Read a configuration file (see [`read_text`]).
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_text(path).map_err(|e| {
            Error::from(e).context(format!("cannot read configuration file {}", path.display()))
        })?;
        Ok(Self::new(path, text))
    }

    /// A configuration file from text already in memory (tests, `pipe check` of a string).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    /// The file's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Parse into a spanned root table and resolve `${ENV}` references in every string value.
    pub fn parse(&self) -> Result<Section<'_>> {
        let root = DeTable::parse(&self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            self.error_at(span, "", first_line(e.message()))
        })?;
        let span = root.span();
        let mut value = Spanned::new(span, DeValue::Table(root.into_inner()));
        let whole = interpolate(&mut value, &mut |name| std::env::var(name).ok())
            .map_err(|(span, msg)| self.error_at(span, "", msg))?;
        Ok(Section {
            file: self,
            key: String::new(),
            value,
            env_values: Arc::new(whole),
        })
    }

    /// A located error at byte range `span`.
    pub fn error_at(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> Error {
        self.locate(span, key, message).into()
    }

    /// The [`ConfigError`] for byte range `span`.
    pub fn locate(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let mut start = span.start.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line_no = self.text[..start].matches('\n').count() + 1;
        let column = self.text[line_start..start].chars().count() + 1;
        let line_text = mask::secrets(self.text[line_start..line_end].trim_end_matches('\r'));
        let mut end = span.end.clamp(start, line_end);
        while !self.text.is_char_boundary(end) {
            end += 1;
        }
        let width = self.text[start..end].chars().count().max(1);
        let gutter = " ".repeat(line_no.to_string().len());
        let snippet = format!(
            "{gutter} |\n{line_no} | {line_text}\n{gutter} | {}{}",
            " ".repeat(column - 1),
            "^".repeat(width)
        );
        ConfigError {
            file: self.path.clone(),
            line: line_no,
            column,
            key: key.to_string(),
            message: message.into(),
            snippet,
        }
    }
}

/// Replace the string value at `span` under `value` with the number or boolean it spells:
/// `Some(true)` if converted, `Some(false)` if it spells neither, `None` if not found.
fn convert_at(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<bool> {
    if value.span() == *span
        && let DeValue::String(s) = value.get_ref()
    {
        return Some(match interpolate::typed(s) {
            Some(typed) => {
                *value.get_mut() = typed;
                true
            }
            None => false,
        });
    }
    match value.get_mut() {
        DeValue::Array(items) => items.iter_mut().find_map(|i| convert_at(i, span)),
        DeValue::Table(table) => table.iter_mut().find_map(|(_, v)| convert_at(v, span)),
        _ => None,
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

/// A spanned table (or value) of a configuration file, with its dotted key path.
#[derive(Debug)]
pub struct Section<'a> {
    file: &'a ConfigFile,
    key: String,
    value: Spanned<DeValue<'a>>,
    /// Spans of the string values that were exactly one `${…}` reference: converted to a
    /// number or boolean when their key wants one.
    env_values: Arc<Vec<Range<usize>>>,
}

impl<'a> Section<'a> {
    /// The dotted key path of this section (`source`, `destination`, ...).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The file this section belongs to.
    pub fn file(&self) -> &'a ConfigFile {
        self.file
    }

    /// The byte span of this section.
    pub fn span(&self) -> Range<usize> {
        self.value.span()
    }

    /// The keys of this table with their spans (empty if it is not a table).
    pub fn keys(&self) -> Vec<(String, Range<usize>)> {
        match self.value.get_ref() {
            DeValue::Table(t) => t
                .keys()
                .map(|k| (k.get_ref().to_string(), k.span()))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn child_key(&self, name: &str) -> String {
        if self.key.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.key)
        }
    }

    /// Remove the child `name` of this table and return it as a section.
    pub fn take(&mut self, name: &str) -> Option<Section<'a>> {
        let DeValue::Table(table) = self.value.get_mut() else {
            return None;
        };
        let (_, value) = table.remove_entry(name)?;
        Some(Section {
            file: self.file,
            key: self.child_key(name),
            value,
            env_values: self.env_values.clone(),
        })
    }

    /// Remove the string child `name`; an error if it exists but is not a string.
    pub fn take_str(&mut self, name: &str) -> Result<Option<(String, Range<usize>)>> {
        match self.take(name) {
            None => Ok(None),
            Some(section) => match section.value.get_ref() {
                DeValue::String(s) => Ok(Some((s.to_string(), section.span()))),
                other => {
                    Err(section.error(format!("expected a string, found {}", other.type_str())))
                }
            },
        }
    }

    /// Add the keys of `table` this table does not have (a named connection's).
    pub(crate) fn insert_missing(&mut self, table: DeTable<'static>) {
        if let DeValue::Table(own) = self.value.get_mut() {
            for (key, value) in table {
                if !own.contains_key(key.get_ref().as_ref()) {
                    own.insert(key, value);
                }
            }
        }
    }

    /// A located error pointing at this whole section.
    pub fn error(&self, message: impl Into<String>) -> Error {
        self.file.error_at(self.value.span(), &self.key, message)
    }

    /// A located error pointing at `span` inside this section, about child key `name`.
    pub fn error_at(&self, span: Range<usize>, name: &str, message: impl Into<String>) -> Error {
        self.file.error_at(span, &self.child_key(name), message)
    }

    /// Deserialize into `T` (a `deny_unknown_fields` config struct). Errors name the exact
    /// key and point at it in the file.
    ///
    /// A string that was exactly one `${VAR}` reference, under a key that wants a number or a
    /// boolean, is converted to one (`parallelism = "${PG_PARALLELISM:-4}"`); one that does not
    /// spell one is an error at the reference.
    pub fn deserialize<T: DeserializeOwned>(self) -> Result<T> {
        let span = self.value.span();
        let mut value = self.value;
        loop {
            let de = ValueDeserializer::from(value.clone());
            let e = match serde_path_to_error::deserialize(de) {
                Ok(config) => return Ok(config),
                Err(e) => e,
            };
            let path = e.path().to_string();
            let inner = e.into_inner();
            let key = match (self.key.is_empty(), path.as_str()) {
                (_, ".") => self.key.clone(),
                (true, p) => p.to_string(),
                (false, p) => format!("{}.{p}", self.key),
            };
            let at = inner.span().unwrap_or(span.clone());
            let message = first_line(inner.message());
            if message.starts_with("invalid type: string") && self.env_values.contains(&at) {
                match convert_at(&mut value, &at) {
                    Some(true) => continue,
                    Some(false) => {
                        return Err(self.file.error_at(
                            at,
                            &key,
                            "this environment reference resolved to text, but the key wants \
                             a number or a boolean",
                        ));
                    }
                    None => {}
                }
            }
            return Err(self.file.error_at(at, &key, message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Csv {
        delimiter: String,
        #[serde(default)]
        header: bool,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Src {
        path: String,
        csv: Option<Csv>,
    }

    fn section_error(text: &str) -> String {
        let file = ConfigFile::new("p.toml", text);
        let mut root = file.parse().expect("parses");
        let source = root.take("source").expect("source");
        source
            .deserialize::<Src>()
            .expect_err("must fail")
            .message()
            .to_string()
    }

    #[test]
    fn unknown_nested_key_names_file_line_column_and_key_path() {
        let msg =
            section_error("name = 'x'\n[source]\npath = 'a.csv'\n[source.csv]\ndelimter = ';'\n");
        assert!(
            msg.starts_with("p.toml:5:1: `source.csv.delimter`: unknown field `delimter`"),
            "{msg}"
        );
        assert!(msg.contains("5 | delimter = ';'"), "{msg}");
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let msg = section_error("[source]\npath = 'a'\ncsv = { delimiter = ',', header = 3 }\n");
        assert!(msg.starts_with("p.toml:3:"), "{msg}");
        assert!(msg.contains("`source.csv.header`"), "{msg}");
        assert!(
            msg.contains("invalid type: integer `3`, expected a boolean"),
            "{msg}"
        );
    }

    #[test]
    fn spans_inside_a_multibyte_character_do_not_panic() {
        let file = ConfigFile::new("p.toml", "name = 'Zürich'\n");
        // Byte 10 is the middle of `ü` (bytes 9..11): the error points at the character.
        let e = file.locate(10..11, "name", "x");
        assert_eq!((e.line, e.column), (1, 10));
    }

    #[test]
    fn syntax_errors_are_located() {
        let file = ConfigFile::new("p.toml", "name = 'x'\n[source\n");
        let msg = file.parse().expect_err("syntax").message().to_string();
        assert!(msg.starts_with("p.toml:2:"), "{msg}");
    }
}
