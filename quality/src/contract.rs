//! A loaded, validated contract: its rules with names, kinds and actions. Everything that
//! can be checked without data is checked here, and every error points at file:line:column.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pipe_framework::config::ConfigFile;
use pipe_framework::{BuildContext, Error, Result};

use crate::build::Builder;
use crate::spec::{Action, ContractSpec, Literal};
use crate::types::LogicalType;

/// What a rule checks.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// The column has (or widens losslessly to) this type; checked on the schema.
    Type(LogicalType),
    /// Not NULL.
    Required,
    /// Unique across the run.
    Unique,
    /// Every key column non-NULL, the combination unique across the run.
    PrimaryKey,
    /// `>= bound`.
    Min(Literal),
    /// `<= bound`.
    Max(Literal),
    /// At least this many characters.
    MinLength(u64),
    /// At most this many characters.
    MaxLength(u64),
    /// Matches the regular expression.
    Pattern(String),
    /// One of these values.
    Allowed(Vec<Literal>),
    /// Fits `decimal(precision, scale)`.
    Precision {
        /// Most significant digits.
        precision: Option<u8>,
        /// Most fractional digits.
        scale: Option<i8>,
    },
    /// Valid against a JSON Schema file (a column's JSON text, or the whole row).
    JsonSchema(PathBuf),
    /// A SQL boolean expression.
    Expression(String),
    /// At least this many rows in the run.
    MinRows(u64),
    /// At most this many rows in the run.
    MaxRows(u64),
    /// The newest value of the column is at most this old when the run ends.
    Freshness(chrono::Duration),
}

impl RuleKind {
    /// The rule kind as the contract spells it (`required`, `min`, `expression`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            RuleKind::Type(_) => "type",
            RuleKind::Required => "required",
            RuleKind::Unique => "unique",
            RuleKind::PrimaryKey => "primary_key",
            RuleKind::Min(_) => "min",
            RuleKind::Max(_) => "max",
            RuleKind::MinLength(_) => "min_length",
            RuleKind::MaxLength(_) => "max_length",
            RuleKind::Pattern(_) => "pattern",
            RuleKind::Allowed(_) => "allowed",
            RuleKind::Precision { .. } => "precision",
            RuleKind::JsonSchema(_) => "json_schema",
            RuleKind::Expression(_) => "expression",
            RuleKind::MinRows(_) => "min_rows",
            RuleKind::MaxRows(_) => "max_rows",
            RuleKind::Freshness(_) => "freshness",
        }
    }

    /// Checked once per run (or on the schema), not per row: can only fail or warn.
    pub fn is_table_level(&self) -> bool {
        matches!(
            self,
            RuleKind::Type(_)
                | RuleKind::MinRows(_)
                | RuleKind::MaxRows(_)
                | RuleKind::Freshness(_)
        )
    }
}

/// One rule of a contract.
#[derive(Debug, Clone)]
pub struct RuleDef {
    /// Its name: the reason code in reports and the quarantine.
    pub name: String,
    /// What it checks.
    pub kind: RuleKind,
    /// The columns it reads (none for row counts; all for a whole-row JSON Schema).
    pub columns: Vec<String>,
    /// What a violation does.
    pub action: Action,
    /// Where it is declared.
    pub span: Range<usize>,
}

/// Where a contract's files (the contract, JSON Schemas) are read from: the file system, or
/// for `pipe check --against REF:PATH`, a git revision.
pub trait ContractFiles {
    /// The text of `path`.
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

/// The file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl ContractFiles for Disk {
    /// A regular file of at most 10 MiB ([`pipe_framework::config::read_text`]): a contract
    /// path naming a device or a huge file is refused before it is read.
    fn read(&self, path: &Path) -> std::io::Result<String> {
        pipe_framework::config::read_text(path)
    }
}

/// A JSON Schema a rule points at: its document and the compiled validator.
#[derive(Clone)]
pub(crate) struct SchemaDoc {
    pub document: serde_json::Value,
    pub validator: Arc<jsonschema::Validator>,
}

/// A validated contract.
#[derive(Clone)]
pub struct Contract {
    spec: ContractSpec,
    file: ConfigFile,
    rules: Vec<RuleDef>,
    schemas: HashMap<String, SchemaDoc>,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("file", &self.file.path())
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Contract {
    /// Load a contract file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_from(path, &Disk)
    }

    /// Load a contract file from `files`.
    pub fn load_from(path: &Path, files: &dyn ContractFiles) -> Result<Self> {
        let file = read(path, files)?;
        let spec: ContractSpec = file.parse()?.deserialize()?;
        if let Some(p) = &spec.path {
            return Err(file.error_at(
                p.span(),
                "path",
                "a contract file holds the contract itself; `path` belongs in a pipeline's \
                 [contract] section",
            ));
        }
        Self::new(spec, file, files)
    }

    /// The `[contract]` section of a pipeline: inline, or `path` to a contract file
    /// (relative to the pipeline file).
    pub fn from_section(spec: ContractSpec, ctx: &BuildContext) -> Result<Self> {
        Self::section(spec, &ctx.file, &Disk)
    }

    fn section(
        spec: ContractSpec,
        pipeline: &ConfigFile,
        files: &dyn ContractFiles,
    ) -> Result<Self> {
        let Some(path) = &spec.path else {
            return Self::new(spec, pipeline.clone(), files);
        };
        if spec.has_rules_besides_path() {
            return Err(pipeline.error_at(
                path.span(),
                "contract.path",
                "with `path`, the whole contract lives in that file; move the other \
                 [contract] keys there",
            ));
        }
        let full = dir_of(pipeline.path()).join(path.get_ref());
        if let Err(e) = files.read(&full) {
            return Err(pipeline.error_at(
                path.span(),
                "contract.path",
                format!("cannot read contract file {}: {e}", full.display()),
            ));
        }
        Self::load_from(&full, files)
    }

    /// A pipeline file (it has a `[source]`, and the contract is its `[contract]` section) or
    /// a contract file.
    pub fn load_any(path: &Path) -> Result<Self> {
        Self::load_any_from(path, &Disk)
    }

    /// [`Contract::load_any`] reading from `files`.
    pub fn load_any_from(path: &Path, files: &dyn ContractFiles) -> Result<Self> {
        let file = read(path, files)?;
        let mut root = file.parse()?;
        if !root.keys().iter().any(|(k, _)| k == "source") {
            return Self::load_from(path, files);
        }
        let section = root
            .take("contract")
            .ok_or_else(|| Error::user(format!("{} has no [contract] section", path.display())))?;
        let spec: ContractSpec = section.deserialize()?;
        Self::section(spec, &file, files)
    }

    fn new(spec: ContractSpec, file: ConfigFile, files: &dyn ContractFiles) -> Result<Self> {
        let mut builder = Builder::new(&file, dir_of(file.path()), files);
        builder.build(&spec)?;
        let (rules, schemas) = builder.finish();
        Ok(Self {
            spec,
            file,
            rules,
            schemas,
        })
    }

    /// Its rules, in declaration order.
    pub fn rules(&self) -> &[RuleDef] {
        &self.rules
    }

    /// What the file says.
    pub fn spec(&self) -> &ContractSpec {
        &self.spec
    }

    /// The file its spans point into.
    pub fn file(&self) -> &ConfigFile {
        &self.file
    }

    /// The compiled JSON Schema of rule `name`.
    pub(crate) fn json_schema(&self, name: &str) -> Option<&Arc<jsonschema::Validator>> {
        self.schemas.get(name).map(|s| &s.validator)
    }

    /// The JSON Schema document of rule `name` (case-insensitive: columns match so).
    pub(crate) fn json_schema_document(&self, name: &str) -> Option<&serde_json::Value> {
        self.schemas
            .iter()
            .find(|(rule, _)| rule.eq_ignore_ascii_case(name))
            .map(|(_, s)| &s.document)
    }
}

/// A configuration file read through `files`.
fn read(path: &Path, files: &dyn ContractFiles) -> Result<ConfigFile> {
    let text = files.read(path).map_err(|e| {
        Error::from(e).context(format!("cannot read contract file {}", path.display()))
    })?;
    Ok(ConfigFile::new(path, text))
}

/// The directory a file's relative paths start from.
/// Empty for a bare file name: joined paths then stay bare (`p.json`, not `./p.json`, which
/// git would read relative to the current directory instead of the repository root).
pub(crate) fn dir_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl ContractSpec {
    fn has_rules_besides_path(&self) -> bool {
        self.version.is_some()
            || self.owner.is_some()
            || self.description.is_some()
            || self.on_violation.is_some()
            || self.max_violation_ratio.is_some()
            || self.quarantine_table.is_some()
            || !self.primary_key.is_empty()
            || self.min_rows.is_some()
            || self.max_rows.is_some()
            || self.freshness.is_some()
            || self.json_schema.is_some()
            || !self.columns.is_empty()
            || !self.rules.is_empty()
            || !self.overrides.is_empty()
    }
}
