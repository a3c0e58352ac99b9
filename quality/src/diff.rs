//! `pipe check --against`: the changes from one version of a contract to the next, each
//! classified. A change is *breaking* when data that loaded under the old contract may not
//! load under the new one (a rule added or tightened, an action made stricter), or when a
//! column consumers read disappears; loosening a rule is not breaking. Column changes are in
//! `diff_column.rs`.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Serialize;

use pipe_framework::config::Spanned;

use crate::contract::Contract;
use crate::diff_column::column;
use crate::expr::Planner;
use crate::spec::{ColumnSpec, ContractSpec, Literal};
use crate::spec::{compare, parse_age};

/// How a change affects producers and consumers of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Existing data or consumers may break.
    Breaking,
    /// Safe.
    NonBreaking,
}

/// One difference between two contracts.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Breaking or not.
    pub severity: Severity,
    /// A stable code: `column_removed`, `type_narrowed`, `required_added`, ...
    pub code: &'static str,
    /// The column, if the change is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// What changed, for humans.
    pub message: String,
    /// Where, in the new contract (1-based line and column; the file's start for removals).
    pub line: usize,
    /// See `line`.
    pub col: usize,
}

/// Collects the changes; positions point into the new contract.
pub(crate) struct Differ<'a> {
    old: &'a Contract,
    new: &'a Contract,
    changes: Vec<Change>,
}

impl Differ<'_> {
    pub(crate) fn add(
        &mut self,
        severity: Severity,
        code: &'static str,
        column: Option<&str>,
        span: Option<Range<usize>>,
        message: String,
    ) {
        let (line, col) = span.map_or((1, 1), |s| {
            let at = self.new.file().locate(s, "", "");
            (at.line, at.column)
        });
        self.changes.push(Change {
            severity,
            code,
            column: column.map(str::to_string),
            message,
            line,
            col,
        });
    }

    /// A bound that only admits values above it (`min`-like: `raise_breaks`) or below it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bound<T: PartialOrd + std::fmt::Display>(
        &mut self,
        column: Option<&str>,
        what: &str,
        codes: [&'static str; 4],
        old: Option<T>,
        new: Option<(T, Range<usize>)>,
        raise_breaks: bool,
    ) {
        let [added, removed, tightened, loosened] = codes;
        let subject = column.map_or(String::new(), |c| format!("`{c}` "));
        match (old, new) {
            (None, Some((n, span))) => self.add(
                Severity::Breaking,
                added,
                column,
                Some(span),
                format!("{subject}{what} {n} added"),
            ),
            (Some(o), None) => self.add(
                Severity::NonBreaking,
                removed,
                column,
                None,
                format!("{subject}{what} {o} removed"),
            ),
            (Some(o), Some((n, span))) => match o.partial_cmp(&n) {
                Some(std::cmp::Ordering::Equal) => {}
                Some(ord) => {
                    let tighter = (ord == std::cmp::Ordering::Less) == raise_breaks;
                    let (severity, code) = if tighter {
                        (Severity::Breaking, tightened)
                    } else {
                        (Severity::NonBreaking, loosened)
                    };
                    self.add(
                        severity,
                        code,
                        column,
                        Some(span),
                        format!("{subject}{what} {o} → {n}"),
                    );
                }
                None => self.add(
                    Severity::Breaking,
                    tightened,
                    column,
                    Some(span),
                    format!("{subject}{what} {o} → {n}"),
                ),
            },
            (None, None) => {}
        }
    }

    /// A JSON Schema rule: added, removed, or its file or the file's content changed.
    pub(crate) fn json_schema(
        &mut self,
        rule: &str,
        column: Option<&str>,
        old: Option<String>,
        new: Option<&Spanned<String>>,
    ) {
        let subject = column.map_or("rows".to_string(), |c| format!("`{c}`"));
        match (old, new) {
            (None, Some(j)) => self.add(
                Breaking,
                "json_schema_added",
                column,
                Some(j.span()),
                format!("{subject} must now satisfy {}", j.get_ref()),
            ),
            (Some(_), None) => self.add(
                NonBreaking,
                "json_schema_removed",
                column,
                None,
                format!("{subject} no longer have a JSON Schema"),
            ),
            (Some(a), Some(b)) => {
                let same_doc =
                    self.old.json_schema_document(rule) == self.new.json_schema_document(rule);
                if &a != b.get_ref() || !same_doc {
                    self.add(
                        Breaking,
                        "json_schema_changed",
                        column,
                        Some(b.span()),
                        format!(
                            "{subject}: JSON Schema {a} → {} (content compared)",
                            b.get_ref()
                        ),
                    );
                }
            }
            (None, None) => {}
        }
    }
}

use Severity::{Breaking, NonBreaking};

/// A bound that compares like the data would (numbers, dates, text).
#[derive(Debug, Clone)]
pub(crate) struct Bound(pub(crate) Literal);

impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        compare(&self.0, &other.0) == Some(std::cmp::Ordering::Equal)
    }
}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        compare(&self.0, &other.0)
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Every change from `old` to `new`, breaking ones first.
pub fn diff(old: &Contract, new: &Contract) -> Vec<Change> {
    let mut d = Differ {
        old,
        new,
        changes: Vec::new(),
    };
    let (o, n) = (old.spec(), new.spec());
    columns(&mut d, o, n);
    table(&mut d, o, n);
    expressions(&mut d, o, n);
    actions(&mut d);
    let breaking = d.changes.iter().any(|c| c.severity == Breaking);
    if let (true, Some(ov), Some(nv)) = (breaking, &o.version, &n.version) {
        let major = |v: &str| v.split('.').next().and_then(|m| m.parse::<u64>().ok());
        if major(ov.get_ref()) >= major(nv.get_ref()) {
            d.add(
                NonBreaking,
                "version_not_bumped",
                None,
                Some(nv.span()),
                format!(
                    "breaking changes call for a new major version; version stays {} → {}",
                    ov.get_ref(),
                    nv.get_ref()
                ),
            );
        }
    }
    d.changes.sort_by_key(|c| c.severity);
    d.changes
}

fn columns(d: &mut Differ<'_>, o: &ContractSpec, n: &ContractSpec) {
    let key = |c: &ColumnSpec| c.name.get_ref().to_lowercase();
    let old: BTreeMap<String, &ColumnSpec> = o.columns.iter().map(|c| (key(c), c)).collect();
    for c in &n.columns {
        if !old.contains_key(&key(c)) {
            let name = c.name.get_ref();
            d.add(
                NonBreaking,
                "column_added",
                Some(name),
                Some(c.name.span()),
                format!("column `{name}` added to the contract"),
            );
            // Its rules are new rules on data that may already flow.
            column(d, &ColumnSpec::named(c.name.clone()), c);
        }
    }
    for (k, oc) in &old {
        match n.columns.iter().find(|c| &key(c) == k) {
            Some(nc) => column(d, oc, nc),
            None => d.add(
                Breaking,
                "column_removed",
                Some(oc.name.get_ref()),
                None,
                format!("column `{}` removed", oc.name.get_ref()),
            ),
        }
    }
}

fn table(d: &mut Differ<'_>, o: &ContractSpec, n: &ContractSpec) {
    // Key columns compare as a set: their order does not change what is unique.
    let keys = |s: &ContractSpec| {
        let mut k: Vec<String> = s
            .primary_key
            .iter()
            .map(|k| k.get_ref().to_lowercase())
            .collect();
        k.sort();
        k
    };
    let (ok, nk) = (keys(o), keys(n));
    let key_span = n.primary_key.first().map(|k| k.span());
    match (ok.is_empty(), nk.is_empty()) {
        (true, false) => d.add(
            Breaking,
            "primary_key_added",
            None,
            key_span,
            format!("primary key ({}) added", nk.join(", ")),
        ),
        (false, true) => d.add(
            NonBreaking,
            "primary_key_removed",
            None,
            None,
            format!("primary key ({}) removed", ok.join(", ")),
        ),
        (false, false) if ok != nk => d.add(
            Breaking,
            "primary_key_changed",
            None,
            key_span,
            format!("primary key ({}) → ({})", ok.join(", "), nk.join(", ")),
        ),
        _ => {}
    }
    let rows = |v: &Option<Spanned<u64>>| v.as_ref().map(|s| (*s.get_ref(), s.span()));
    let codes = [
        "min_rows_added",
        "min_rows_removed",
        "min_rows_raised",
        "min_rows_lowered",
    ];
    d.bound(
        None,
        "min_rows",
        codes,
        rows(&o.min_rows).map(|x| x.0),
        rows(&n.min_rows),
        true,
    );
    let codes = [
        "max_rows_added",
        "max_rows_removed",
        "max_rows_lowered",
        "max_rows_raised",
    ];
    d.bound(
        None,
        "max_rows",
        codes,
        rows(&o.max_rows).map(|x| x.0),
        rows(&n.max_rows),
        false,
    );
    let ratio = |v: &Option<Spanned<f64>>| v.as_ref().map(|s| (*s.get_ref(), s.span()));
    let codes = [
        "max_violation_ratio_added",
        "max_violation_ratio_removed",
        "max_violation_ratio_lowered",
        "max_violation_ratio_raised",
    ];
    let (old_ratio, new_ratio) = (ratio(&o.max_violation_ratio), ratio(&n.max_violation_ratio));
    d.bound(
        None,
        "max_violation_ratio",
        codes,
        old_ratio.map(|x| x.0),
        new_ratio,
        false,
    );
    let age = |s: &ContractSpec| {
        s.freshness.as_ref().and_then(|f| {
            parse_age(f.max_age.get_ref()).map(|a| (a.num_seconds(), f.max_age.span()))
        })
    };
    let codes = [
        "freshness_added",
        "freshness_removed",
        "freshness_tightened",
        "freshness_loosened",
    ];
    d.bound(
        None,
        "freshness max_age (s)",
        codes,
        age(o).map(|x| x.0),
        age(n),
        false,
    );
    if let (Some(a), Some(b)) = (&o.freshness, &n.freshness)
        && !a.column.get_ref().eq_ignore_ascii_case(b.column.get_ref())
    {
        d.add(
            Breaking,
            "freshness_changed",
            None,
            Some(b.column.span()),
            format!(
                "freshness column `{}` → `{}`",
                a.column.get_ref(),
                b.column.get_ref()
            ),
        );
    }
    let schema = o.json_schema.as_ref().map(|j| j.get_ref().clone());
    d.json_schema("json_schema", None, schema, n.json_schema.as_ref());
}

/// SQL-expression rules, compared as parsed SQL (whitespace and formatting do not count).
fn expressions(d: &mut Differ<'_>, o: &ContractSpec, n: &ContractSpec) {
    let planner = Planner::new(chrono::Utc::now());
    let normal = |sql: &str| planner.normalize(sql).unwrap_or_else(|| sql.to_string());
    let old: BTreeMap<&str, &str> = o
        .rules
        .iter()
        .map(|r| (r.name.get_ref().as_str(), r.expression.get_ref().as_str()))
        .collect();
    for r in &n.rules {
        let name = r.name.get_ref().as_str();
        let sql = r.expression.get_ref();
        match old.get(name) {
            None => d.add(
                Breaking,
                "rule_added",
                None,
                Some(r.name.span()),
                format!("rule `{name}` added: {sql}"),
            ),
            Some(e) if normal(e) != normal(sql) => d.add(
                Breaking,
                "rule_changed",
                None,
                Some(r.expression.span()),
                format!("rule `{name}`: {e} → {sql}"),
            ),
            Some(_) => {}
        }
    }
    for name in old.keys() {
        if !n.rules.iter().any(|r| r.name.get_ref() == name) {
            d.add(
                NonBreaking,
                "rule_removed",
                None,
                None,
                format!("rule `{name}` removed"),
            );
        }
    }
}

/// A rule kept under the same name whose action changed (through `on_violation` at any
/// level or `[overrides]`): stricter (warn → drop → quarantine → fail) is breaking, since
/// rows that loaded may now be left out or fail the run.
fn actions(d: &mut Differ<'_>) {
    let (old, new) = (d.old, d.new);
    for rule in new.rules() {
        let Some(before) = old
            .rules()
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(&rule.name))
        else {
            continue;
        };
        if before.action == rule.action {
            continue;
        }
        let (severity, code) = if rule.action > before.action {
            (Breaking, "action_stricter")
        } else {
            (NonBreaking, "action_looser")
        };
        d.add(
            severity,
            code,
            rule.columns.first().map(String::as_str),
            Some(rule.span.clone()),
            format!(
                "rule `{}`: on_violation {} → {}",
                rule.name,
                before.action.as_str(),
                rule.action.as_str()
            ),
        );
    }
}
