//! A loaded, validated contract: its rules with names, kinds and actions. Everything that
//! can be checked without data is checked here, and every error points at file:line:column.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pipe_framework::config::ConfigFile;
use pipe_framework::{BuildContext, Error, Result};

use crate::expr::Planner;
use crate::spec::{Action, ColumnSpec, ContractSpec, Literal};
use crate::types::{KNOWN, LogicalType};

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

/// A validated contract.
#[derive(Clone)]
pub struct Contract {
    spec: ContractSpec,
    file: ConfigFile,
    rules: Vec<RuleDef>,
    schemas: HashMap<String, Arc<jsonschema::Validator>>,
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
        let file = ConfigFile::read(path)?;
        let spec: ContractSpec = file.parse()?.deserialize()?;
        if let Some(p) = &spec.path {
            return Err(file.error_at(
                p.span(),
                "path",
                "a contract file holds the contract itself; `path` belongs in a pipeline's \
                 [contract] section",
            ));
        }
        Self::new(spec, file)
    }

    /// The `[contract]` section of a pipeline: inline, or `path` to a contract file
    /// (relative to the pipeline file).
    pub fn from_section(spec: ContractSpec, ctx: &BuildContext) -> Result<Self> {
        match &spec.path {
            Some(path) => {
                if spec.has_rules_besides_path() {
                    return Err(ctx.file.error_at(
                        path.span(),
                        "contract.path",
                        "with `path`, the whole contract lives in that file; move the other \
                         [contract] keys there",
                    ));
                }
                let full = ctx.pipeline_dir().join(path.get_ref());
                if !full.exists() {
                    return Err(ctx.file.error_at(
                        path.span(),
                        "contract.path",
                        format!("contract file {} does not exist", full.display()),
                    ));
                }
                Self::load(&full)
            }
            None => Self::new(spec, ctx.file.clone()),
        }
    }

    /// The contract of a pipeline file (its `[contract]` section).
    pub fn from_pipeline(path: &Path) -> Result<Self> {
        let file = ConfigFile::read(path)?;
        let mut root = file.parse()?;
        let section = root
            .take("contract")
            .ok_or_else(|| Error::user(format!("{} has no [contract] section", path.display())))?;
        let spec: ContractSpec = section.deserialize()?;
        let ctx = BuildContext {
            pipeline_file: path.to_path_buf(),
            pipeline: String::new(),
            file: file.clone(),
        };
        Self::from_section(spec, &ctx)
    }

    /// A pipeline file (it has a `[source]`) or a contract file.
    pub fn load_any(path: &Path) -> Result<Self> {
        let file = ConfigFile::read(path)?;
        let is_pipeline = file.parse()?.keys().iter().any(|(k, _)| k == "source");
        if is_pipeline {
            Self::from_pipeline(path)
        } else {
            Self::load(path)
        }
    }

    fn new(spec: ContractSpec, file: ConfigFile) -> Result<Self> {
        let mut builder = Builder {
            file: &file,
            dir: file
                .path()
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            rules: Vec::new(),
            schemas: HashMap::new(),
            planner: Planner::new(chrono::Utc::now()),
        };
        builder.build(&spec)?;
        let (rules, schemas) = (builder.rules, builder.schemas);
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
        self.schemas.get(name)
    }
}

impl ContractSpec {
    fn has_rules_besides_path(&self) -> bool {
        self.version.is_some()
            || self.owner.is_some()
            || self.description.is_some()
            || self.on_violation != Action::default()
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

struct Builder<'a> {
    file: &'a ConfigFile,
    dir: PathBuf,
    rules: Vec<RuleDef>,
    schemas: HashMap<String, Arc<jsonschema::Validator>>,
    planner: Planner,
}

impl Builder<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> Error {
        self.file.error_at(span, key, message)
    }

    fn push(
        &mut self,
        name: String,
        kind: RuleKind,
        columns: Vec<String>,
        action: Action,
        span: Range<usize>,
    ) -> Result<()> {
        if self.rules.iter().any(|r| r.name == name) {
            return Err(self.err(span, &name, format!("a second rule named `{name}`")));
        }
        let action = if kind.is_table_level() && action != Action::Warn {
            Action::Fail
        } else {
            action
        };
        self.rules.push(RuleDef {
            name,
            kind,
            columns,
            action,
            span,
        });
        Ok(())
    }

    fn build(&mut self, spec: &ContractSpec) -> Result<()> {
        if let Some(v) = &spec.version {
            let parts: Vec<&str> = v.get_ref().split('.').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.parse::<u64>().is_err()) {
                return Err(self.err(
                    v.span(),
                    "version",
                    "expected a semantic version like \"1.2.0\"",
                ));
            }
        }
        if let Some(r) = &spec.max_violation_ratio
            && !(0.0..=1.0).contains(r.get_ref())
        {
            return Err(self.err(r.span(), "max_violation_ratio", "must be between 0 and 1"));
        }
        let default = spec.on_violation;
        if let Some(first) = spec.primary_key.first() {
            let columns: Vec<String> = spec
                .primary_key
                .iter()
                .map(|c| c.get_ref().clone())
                .collect();
            if let Some(empty) = spec.primary_key.iter().find(|c| c.get_ref().is_empty()) {
                return Err(self.err(empty.span(), "primary_key", "empty column name"));
            }
            self.push(
                "primary_key".into(),
                RuleKind::PrimaryKey,
                columns,
                default,
                first.span(),
            )?;
        }
        let mut seen: HashMap<String, ()> = HashMap::new();
        for col in &spec.columns {
            let name = col.name.get_ref();
            if name.is_empty() {
                return Err(self.err(col.name.span(), "columns.name", "empty column name"));
            }
            if seen.insert(name.to_lowercase(), ()).is_some() {
                return Err(self.err(
                    col.name.span(),
                    "columns.name",
                    format!("column `{name}` is declared twice"),
                ));
            }
            self.column(col, col.on_violation.unwrap_or(default))?;
        }
        for rule in &spec.rules {
            let name = rule.name.get_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return Err(self.err(
                    rule.name.span(),
                    "rules.name",
                    "rule names use letters, digits, `_`, `.` and `-`",
                ));
            }
            let sql = rule.expression.get_ref();
            if let Err(e) = self.planner.parse(sql) {
                return Err(self.err(
                    rule.expression.span(),
                    &format!("rules.{name}.expression"),
                    e,
                ));
            }
            self.push(
                name.clone(),
                RuleKind::Expression(sql.clone()),
                Vec::new(),
                rule.on_violation.unwrap_or(default),
                rule.name.span(),
            )?;
        }
        self.table_rules(spec, default)?;
        for (name, action) in &spec.overrides {
            let key = format!("overrides.{}", name.get_ref());
            let Some(rule) = self.rules.iter_mut().find(|r| &r.name == name.get_ref()) else {
                let names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
                return Err(self.err(
                    name.span(),
                    &key,
                    format!(
                        "no rule named `{}`; rules: {}",
                        name.get_ref(),
                        names.join(", ")
                    ),
                ));
            };
            if rule.kind.is_table_level() && !matches!(action, Action::Fail | Action::Warn) {
                return Err(self.err(
                    name.span(),
                    &key,
                    format!(
                        "`{}` is checked once per run, so it can only fail or warn",
                        name.get_ref()
                    ),
                ));
            }
            rule.action = *action;
        }
        Ok(())
    }

    fn table_rules(&mut self, spec: &ContractSpec, default: Action) -> Result<()> {
        if let (Some(min), Some(max)) = (&spec.min_rows, &spec.max_rows)
            && min.get_ref() > max.get_ref()
        {
            return Err(self.err(
                min.span(),
                "min_rows",
                format!(
                    "min_rows {} is above max_rows {}",
                    min.get_ref(),
                    max.get_ref()
                ),
            ));
        }
        if let Some(min) = &spec.min_rows {
            self.push(
                "min_rows".into(),
                RuleKind::MinRows(*min.get_ref()),
                Vec::new(),
                default,
                min.span(),
            )?;
        }
        if let Some(max) = &spec.max_rows {
            self.push(
                "max_rows".into(),
                RuleKind::MaxRows(*max.get_ref()),
                Vec::new(),
                default,
                max.span(),
            )?;
        }
        if let Some(f) = &spec.freshness {
            let age = parse_age(f.max_age.get_ref()).ok_or_else(|| {
                self.err(
                    f.max_age.span(),
                    "freshness.max_age",
                    "expected a duration like \"30m\", \"6h\", \"2d\" or \"1w\"",
                )
            })?;
            self.push(
                "freshness".into(),
                RuleKind::Freshness(age),
                vec![f.column.get_ref().clone()],
                default,
                f.column.span(),
            )?;
        }
        if let Some(path) = &spec.json_schema {
            let full =
                self.schema_file(path.get_ref(), path.span(), "json_schema", "json_schema")?;
            self.push(
                "json_schema".into(),
                RuleKind::JsonSchema(full),
                Vec::new(),
                default,
                path.span(),
            )?;
        }
        Ok(())
    }

    fn column(&mut self, col: &ColumnSpec, action: Action) -> Result<()> {
        let n = col.name.get_ref().clone();
        let key = |k: &str| format!("columns.{n}.{k}");
        let cols = || vec![n.clone()];
        if let Some(t) = &col.data_type {
            let lt = LogicalType::parse(t.get_ref()).ok_or_else(|| {
                self.err(
                    t.span(),
                    &key("type"),
                    format!("unknown type `{}`; known: {KNOWN}", t.get_ref()),
                )
            })?;
            self.push(
                format!("{n}.type"),
                RuleKind::Type(lt),
                cols(),
                action,
                t.span(),
            )?;
        }
        if col.required {
            self.push(
                format!("{n}.required"),
                RuleKind::Required,
                cols(),
                action,
                col.name.span(),
            )?;
        }
        if col.unique {
            self.push(
                format!("{n}.unique"),
                RuleKind::Unique,
                cols(),
                action,
                col.name.span(),
            )?;
        }
        for (bound, which) in [(&col.min, "min"), (&col.max, "max")] {
            if let Some(b) = bound
                && matches!(b.get_ref(), Literal::Bool(_))
            {
                return Err(self.err(
                    b.span(),
                    &key(which),
                    "a bound is a number, a date or a timestamp",
                ));
            }
        }
        if let (Some(min), Some(max)) = (&col.min, &col.max) {
            match compare(min.get_ref(), max.get_ref()) {
                None => {
                    return Err(self.err(
                        max.span(),
                        &key("max"),
                        format!(
                            "min {} and max {} are not of the same kind",
                            min.get_ref(),
                            max.get_ref()
                        ),
                    ));
                }
                Some(std::cmp::Ordering::Greater) => {
                    return Err(self.err(
                        min.span(),
                        &key("min"),
                        format!("min {} is above max {}", min.get_ref(), max.get_ref()),
                    ));
                }
                _ => {}
            }
        }
        if let Some(min) = &col.min {
            self.push(
                format!("{n}.min"),
                RuleKind::Min(min.get_ref().clone()),
                cols(),
                action,
                min.span(),
            )?;
        }
        if let Some(max) = &col.max {
            self.push(
                format!("{n}.max"),
                RuleKind::Max(max.get_ref().clone()),
                cols(),
                action,
                max.span(),
            )?;
        }
        if let (Some(min), Some(max)) = (&col.min_length, &col.max_length)
            && min.get_ref() > max.get_ref()
        {
            return Err(self.err(
                min.span(),
                &key("min_length"),
                format!(
                    "min_length {} is above max_length {}",
                    min.get_ref(),
                    max.get_ref()
                ),
            ));
        }
        if let Some(l) = &col.min_length {
            self.push(
                format!("{n}.min_length"),
                RuleKind::MinLength(*l.get_ref()),
                cols(),
                action,
                l.span(),
            )?;
        }
        if let Some(l) = &col.max_length {
            self.push(
                format!("{n}.max_length"),
                RuleKind::MaxLength(*l.get_ref()),
                cols(),
                action,
                l.span(),
            )?;
        }
        if let Some(p) = &col.pattern {
            if let Err(e) = regex::Regex::new(p.get_ref()) {
                let why = e.to_string();
                let why = why.lines().last().unwrap_or("invalid").trim().to_string();
                return Err(self.err(
                    p.span(),
                    &key("pattern"),
                    format!("not a valid regular expression: {why}"),
                ));
            }
            self.push(
                format!("{n}.pattern"),
                RuleKind::Pattern(p.get_ref().clone()),
                cols(),
                action,
                p.span(),
            )?;
        }
        if let Some(values) = &col.allowed {
            let list = values.get_ref();
            if list.is_empty() {
                return Err(self.err(
                    values.span(),
                    &key("allowed"),
                    "an empty list allows nothing",
                ));
            }
            if list
                .windows(2)
                .any(|w| compare_kind(&w[0], &w[1]).is_none())
            {
                return Err(self.err(
                    values.span(),
                    &key("allowed"),
                    "allowed values must all be of one kind",
                ));
            }
            self.push(
                format!("{n}.allowed"),
                RuleKind::Allowed(list.clone()),
                cols(),
                action,
                values.span(),
            )?;
        }
        if col.precision.is_some() || col.scale.is_some() {
            let precision = col.precision.as_ref().map(|p| *p.get_ref());
            let scale = col.scale.as_ref().map(|s| *s.get_ref());
            let span = col.precision.as_ref().map_or_else(
                || col.scale.as_ref().map_or(col.name.span(), |s| s.span()),
                |p| p.span(),
            );
            if precision.is_some_and(|p| p == 0 || p > 38) {
                return Err(self.err(span, &key("precision"), "precision is 1 to 38 digits"));
            }
            if let Some(s) = scale
                && (s < 0 || precision.is_some_and(|p| s as u8 > p))
            {
                return Err(self.err(span, &key("scale"), "scale is 0 up to the precision"));
            }
            self.push(
                format!("{n}.precision"),
                RuleKind::Precision { precision, scale },
                cols(),
                action,
                span,
            )?;
        }
        if let Some(path) = &col.json_schema {
            let name = format!("{n}.json_schema");
            let full = self.schema_file(path.get_ref(), path.span(), &key("json_schema"), &name)?;
            self.push(
                name,
                RuleKind::JsonSchema(full),
                cols(),
                action,
                path.span(),
            )?;
        }
        Ok(())
    }

    /// Read and compile a JSON Schema file for rule `rule`.
    fn schema_file(
        &mut self,
        path: &str,
        span: Range<usize>,
        key: &str,
        rule: &str,
    ) -> Result<PathBuf> {
        let full = self.dir.join(path);
        let text = std::fs::read_to_string(&full).map_err(|e| {
            self.err(
                span.clone(),
                key,
                format!("cannot read JSON Schema {}: {e}", full.display()),
            )
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            self.err(
                span.clone(),
                key,
                format!("{} is not JSON: {e}", full.display()),
            )
        })?;
        let base = std::fs::canonicalize(&full).unwrap_or_else(|_| full.clone());
        let validator = jsonschema::options()
            .with_base_uri(format!("file://{}", base.display()))
            .build(&value)
            .map_err(|e| {
                self.err(
                    span,
                    key,
                    format!("{} is not a valid JSON Schema: {e}", full.display()),
                )
            })?;
        self.schemas.insert(rule.to_string(), Arc::new(validator));
        Ok(full)
    }
}

/// Order two bounds of the same kind (numbers; dates/timestamps; text); `None` if their
/// kinds differ.
pub(crate) fn compare(a: &Literal, b: &Literal) -> Option<std::cmp::Ordering> {
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return x.partial_cmp(&y);
    }
    let (x, y) = (a.as_text()?, b.as_text()?);
    match (instant(&x), instant(&y)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        (None, None) => Some(x.cmp(&y)),
        _ => None,
    }
}

fn compare_kind(a: &Literal, b: &Literal) -> Option<()> {
    let kind = |l: &Literal| match l {
        Literal::Bool(_) => 0,
        Literal::Int(_) | Literal::Float(_) => 1,
        Literal::Text(_) | Literal::Datetime(_) => 2,
    };
    (kind(a) == kind(b)).then_some(())
}

/// A date or timestamp string as a comparable instant.
fn instant(s: &str) -> Option<chrono::NaiveDateTime> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.naive_utc())
        .ok()
        .or_else(|| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok())
        .or_else(|| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").ok())
}

/// `30m`, `6h`, `2d`, `1w`, `45s` (also spelled out: `2 days`).
pub(crate) fn parse_age(s: &str) -> Option<chrono::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    let seconds = match unit.trim() {
        "s" | "sec" | "second" | "seconds" => 1,
        "m" | "min" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return None,
    };
    chrono::Duration::try_seconds(n.checked_mul(seconds)?)
}
