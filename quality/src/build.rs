//! Building a contract's rules from what its file says: everything that can be checked
//! without data is checked here, and every error points at file:line:column.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use pipe_framework::config::ConfigFile;
use pipe_framework::{Error, Result};

use crate::contract::{ContractFiles, RuleDef, RuleKind, SchemaDoc};
use crate::expr::Planner;
use crate::spec::{Action, ColumnSpec, ContractSpec, Literal, compare, compare_kind, parse_age};
use crate::types::{KNOWN, LogicalType};

/// Turns a [`ContractSpec`] into validated rules.
pub(crate) struct Builder<'a> {
    file: &'a ConfigFile,
    dir: PathBuf,
    files: &'a dyn ContractFiles,
    rules: Vec<RuleDef>,
    schemas: HashMap<String, SchemaDoc>,
    planner: Planner,
}

impl<'a> Builder<'a> {
    pub(crate) fn new(file: &'a ConfigFile, dir: PathBuf, files: &'a dyn ContractFiles) -> Self {
        Self {
            file,
            dir,
            files,
            rules: Vec::new(),
            schemas: HashMap::new(),
            planner: Planner::new(chrono::Utc::now()),
        }
    }

    /// The rules and compiled JSON Schemas.
    pub(crate) fn finish(self) -> (Vec<RuleDef>, HashMap<String, SchemaDoc>) {
        (self.rules, self.schemas)
    }

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

    pub(crate) fn build(&mut self, spec: &ContractSpec) -> Result<()> {
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
        let default = spec.on_violation.unwrap_or_default();
        if let Some(t) = &spec.quarantine_table {
            let parts: Vec<&str> = t.get_ref().split('.').collect();
            if parts.len() > 2 || parts.iter().any(|p| p.trim().is_empty()) {
                return Err(self.err(
                    t.span(),
                    "quarantine_table",
                    "expected `schema.table` or `table`",
                ));
            }
        }
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
        let text = self.files.read(&full).map_err(|e| {
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
        // Relative `$ref`s resolve against the schema file's own location.
        let base = std::path::absolute(&full).unwrap_or_else(|_| full.clone());
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
        let doc = SchemaDoc {
            document: value,
            validator: Arc::new(validator),
        };
        self.schemas.insert(rule.to_string(), doc);
        Ok(full)
    }
}
