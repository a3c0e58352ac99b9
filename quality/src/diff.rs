//! `pipe check --against`: the changes from one version of a contract to the next, each
//! classified. A change is *breaking* when data that satisfied the old contract may fail
//! the new one (a rule added or tightened), or when consumers lose something they relied on
//! (a column removed, the key changed); loosening a rule is not breaking.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Serialize;

use crate::contract::{Contract, compare};
use crate::spec::{ColumnSpec, ContractSpec, Literal};
use crate::types::LogicalType;

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

struct Differ<'a> {
    new: &'a Contract,
    changes: Vec<Change>,
}

impl Differ<'_> {
    fn add(
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
    fn bound<T: PartialOrd + std::fmt::Display>(
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
}

/// A bound that compares like the data would (numbers, dates, text).
#[derive(Debug, Clone)]
struct Bound(Literal);

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
        new,
        changes: Vec::new(),
    };
    let (o, n) = (old.spec(), new.spec());
    columns(&mut d, o, n);
    table(&mut d, o, n);
    let breaking = d.changes.iter().any(|c| c.severity == Severity::Breaking);
    if let (true, Some(ov), Some(nv)) = (breaking, &o.version, &n.version) {
        let major = |v: &str| v.split('.').next().and_then(|m| m.parse::<u64>().ok());
        if major(ov.get_ref()) >= major(nv.get_ref()) {
            d.add(
                Severity::NonBreaking,
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
            if c.required {
                d.add(
                    Severity::Breaking,
                    "required_column_added",
                    Some(name),
                    Some(c.name.span()),
                    format!("required column `{name}` added"),
                );
            } else {
                d.add(
                    Severity::NonBreaking,
                    "column_added",
                    Some(name),
                    Some(c.name.span()),
                    format!("column `{name}` added"),
                );
            }
        }
    }
    for (k, oc) in &old {
        let Some(nc) = n.columns.iter().find(|c| &key(c) == k) else {
            d.add(
                Severity::Breaking,
                "column_removed",
                Some(oc.name.get_ref()),
                None,
                format!("column `{}` removed", oc.name.get_ref()),
            );
            continue;
        };
        column(d, oc, nc);
    }
}

fn column(d: &mut Differ<'_>, o: &ColumnSpec, n: &ColumnSpec) {
    let name = n.name.get_ref().as_str();
    let c = Some(name);
    let ty = |s: &ColumnSpec| {
        s.data_type
            .as_ref()
            .and_then(|t| LogicalType::parse(t.get_ref()))
    };
    match (ty(o), ty(n), &n.data_type) {
        (None, Some(t), Some(span)) => d.add(
            Severity::Breaking,
            "type_added",
            c,
            Some(span.span()),
            format!("`{name}` must now be {t}"),
        ),
        (Some(t), None, _) => d.add(
            Severity::NonBreaking,
            "type_removed",
            c,
            None,
            format!("`{name}` no longer must be {t}"),
        ),
        (Some(a), Some(b), Some(span)) if a != b => {
            let (severity, code) = if a.widens_to(&b) {
                (Severity::NonBreaking, "type_widened")
            } else if b.widens_to(&a) {
                (Severity::Breaking, "type_narrowed")
            } else {
                (Severity::Breaking, "type_changed")
            };
            d.add(
                severity,
                code,
                c,
                Some(span.span()),
                format!("`{name}` type {a} → {b}"),
            );
        }
        _ => {}
    }
    let flag = |d: &mut Differ<'_>,
                was: bool,
                is: bool,
                what: &str,
                added: &'static str,
                removed: &'static str| match (was, is) {
        (false, true) => d.add(
            Severity::Breaking,
            added,
            c,
            Some(n.name.span()),
            format!("`{name}` is now {what}"),
        ),
        (true, false) => d.add(
            Severity::NonBreaking,
            removed,
            c,
            Some(n.name.span()),
            format!("`{name}` is no longer {what}"),
        ),
        _ => {}
    };
    flag(
        d,
        o.required,
        n.required,
        "required",
        "required_added",
        "required_removed",
    );
    flag(
        d,
        o.unique,
        n.unique,
        "unique",
        "unique_added",
        "unique_removed",
    );
    let lit = |v: &Option<pipe_framework::config::Spanned<Literal>>| {
        v.as_ref().map(|s| (Bound(s.get_ref().clone()), s.span()))
    };
    d.bound(
        c,
        "min",
        ["min_added", "min_removed", "min_raised", "min_lowered"],
        lit(&o.min).map(|x| x.0),
        lit(&n.min),
        true,
    );
    d.bound(
        c,
        "max",
        ["max_added", "max_removed", "max_lowered", "max_raised"],
        lit(&o.max).map(|x| x.0),
        lit(&n.max),
        false,
    );
    let num = |v: &Option<pipe_framework::config::Spanned<u64>>| {
        v.as_ref().map(|s| (*s.get_ref(), s.span()))
    };
    d.bound(
        c,
        "min_length",
        [
            "min_length_added",
            "min_length_removed",
            "min_length_raised",
            "min_length_lowered",
        ],
        num(&o.min_length).map(|x| x.0),
        num(&n.min_length),
        true,
    );
    d.bound(
        c,
        "max_length",
        [
            "max_length_added",
            "max_length_removed",
            "max_length_lowered",
            "max_length_raised",
        ],
        num(&o.max_length).map(|x| x.0),
        num(&n.max_length),
        false,
    );
    let p = |v: &Option<pipe_framework::config::Spanned<u8>>| {
        v.as_ref().map(|s| (*s.get_ref(), s.span()))
    };
    d.bound(
        c,
        "precision",
        [
            "precision_added",
            "precision_removed",
            "precision_lowered",
            "precision_raised",
        ],
        p(&o.precision).map(|x| x.0),
        p(&n.precision),
        false,
    );
    let s = |v: &Option<pipe_framework::config::Spanned<i8>>| {
        v.as_ref().map(|s| (*s.get_ref(), s.span()))
    };
    d.bound(
        c,
        "scale",
        [
            "scale_added",
            "scale_removed",
            "scale_lowered",
            "scale_raised",
        ],
        s(&o.scale).map(|x| x.0),
        s(&n.scale),
        false,
    );
    match (&o.pattern, &n.pattern) {
        (None, Some(p)) => d.add(
            Severity::Breaking,
            "pattern_added",
            c,
            Some(p.span()),
            format!("`{name}` must now match /{}/", p.get_ref()),
        ),
        (Some(p), None) => d.add(
            Severity::NonBreaking,
            "pattern_removed",
            c,
            None,
            format!("`{name}` no longer must match /{}/", p.get_ref()),
        ),
        (Some(a), Some(b)) if a.get_ref() != b.get_ref() => d.add(
            Severity::Breaking,
            "pattern_changed",
            c,
            Some(b.span()),
            format!("`{name}` pattern /{}/ → /{}/", a.get_ref(), b.get_ref()),
        ),
        _ => {}
    }
    match (&o.allowed, &n.allowed) {
        (None, Some(v)) => d.add(
            Severity::Breaking,
            "allowed_added",
            c,
            Some(v.span()),
            format!("`{name}` is now limited to {} values", v.get_ref().len()),
        ),
        (Some(_), None) => d.add(
            Severity::NonBreaking,
            "allowed_removed",
            c,
            None,
            format!("`{name}` is no longer limited to a list of values"),
        ),
        (Some(a), Some(b)) => {
            let gone: Vec<String> = a
                .get_ref()
                .iter()
                .filter(|v| !b.get_ref().contains(v))
                .map(|v| v.to_string())
                .collect();
            let new: Vec<String> = b
                .get_ref()
                .iter()
                .filter(|v| !a.get_ref().contains(v))
                .map(|v| v.to_string())
                .collect();
            if !gone.is_empty() {
                d.add(
                    Severity::Breaking,
                    "allowed_values_removed",
                    c,
                    Some(b.span()),
                    format!("`{name}` no longer allows {}", gone.join(", ")),
                );
            }
            if !new.is_empty() {
                d.add(
                    Severity::NonBreaking,
                    "allowed_values_added",
                    c,
                    Some(b.span()),
                    format!("`{name}` now also allows {}", new.join(", ")),
                );
            }
        }
        _ => {}
    }
    match (&o.json_schema, &n.json_schema) {
        (None, Some(j)) => d.add(
            Severity::Breaking,
            "json_schema_added",
            c,
            Some(j.span()),
            format!("`{name}` must now satisfy {}", j.get_ref()),
        ),
        (Some(_), None) => d.add(
            Severity::NonBreaking,
            "json_schema_removed",
            c,
            None,
            format!("`{name}` no longer has a JSON Schema"),
        ),
        (Some(a), Some(b)) if a.get_ref() != b.get_ref() => d.add(
            Severity::Breaking,
            "json_schema_changed",
            c,
            Some(b.span()),
            format!("`{name}` JSON Schema {} → {}", a.get_ref(), b.get_ref()),
        ),
        _ => {}
    }
}

fn table(d: &mut Differ<'_>, o: &ContractSpec, n: &ContractSpec) {
    let keys = |s: &ContractSpec| {
        s.primary_key
            .iter()
            .map(|k| k.get_ref().to_lowercase())
            .collect::<Vec<_>>()
    };
    let (ok, nk) = (keys(o), keys(n));
    let key_span = n.primary_key.first().map(|k| k.span());
    match (ok.is_empty(), nk.is_empty()) {
        (true, false) => d.add(
            Severity::Breaking,
            "primary_key_added",
            None,
            key_span,
            format!("primary key ({}) added", nk.join(", ")),
        ),
        (false, true) => d.add(
            Severity::NonBreaking,
            "primary_key_removed",
            None,
            None,
            format!("primary key ({}) removed", ok.join(", ")),
        ),
        (false, false) if ok != nk => d.add(
            Severity::Breaking,
            "primary_key_changed",
            None,
            key_span,
            format!("primary key ({}) → ({})", ok.join(", "), nk.join(", ")),
        ),
        _ => {}
    }
    let rows = |v: &Option<pipe_framework::config::Spanned<u64>>| {
        v.as_ref().map(|s| (*s.get_ref(), s.span()))
    };
    d.bound(
        None,
        "min_rows",
        [
            "min_rows_added",
            "min_rows_removed",
            "min_rows_raised",
            "min_rows_lowered",
        ],
        rows(&o.min_rows).map(|x| x.0),
        rows(&n.min_rows),
        true,
    );
    d.bound(
        None,
        "max_rows",
        [
            "max_rows_added",
            "max_rows_removed",
            "max_rows_lowered",
            "max_rows_raised",
        ],
        rows(&o.max_rows).map(|x| x.0),
        rows(&n.max_rows),
        false,
    );
    let ratio = |v: &Option<pipe_framework::config::Spanned<f64>>| {
        v.as_ref().map(|s| (*s.get_ref(), s.span()))
    };
    d.bound(
        None,
        "max_violation_ratio",
        [
            "max_violation_ratio_added",
            "max_violation_ratio_removed",
            "max_violation_ratio_lowered",
            "max_violation_ratio_raised",
        ],
        ratio(&o.max_violation_ratio).map(|x| x.0),
        ratio(&n.max_violation_ratio),
        false,
    );
    let age = |s: &ContractSpec| {
        s.freshness.as_ref().and_then(|f| {
            crate::contract::parse_age(f.max_age.get_ref())
                .map(|a| (a.num_seconds(), f.max_age.span()))
        })
    };
    d.bound(
        None,
        "freshness max_age (s)",
        [
            "freshness_added",
            "freshness_removed",
            "freshness_tightened",
            "freshness_loosened",
        ],
        age(o).map(|x| x.0),
        age(n),
        false,
    );
    if let (Some(a), Some(b)) = (&o.freshness, &n.freshness)
        && !a.column.get_ref().eq_ignore_ascii_case(b.column.get_ref())
    {
        d.add(
            Severity::Breaking,
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
    match (&o.json_schema, &n.json_schema) {
        (None, Some(j)) => d.add(
            Severity::Breaking,
            "json_schema_added",
            None,
            Some(j.span()),
            format!("rows must now satisfy {}", j.get_ref()),
        ),
        (Some(_), None) => d.add(
            Severity::NonBreaking,
            "json_schema_removed",
            None,
            None,
            "rows no longer have a JSON Schema".into(),
        ),
        (Some(a), Some(b)) if a.get_ref() != b.get_ref() => d.add(
            Severity::Breaking,
            "json_schema_changed",
            None,
            Some(b.span()),
            format!("row JSON Schema {} → {}", a.get_ref(), b.get_ref()),
        ),
        _ => {}
    }
    let old_rules: BTreeMap<&str, &str> = o
        .rules
        .iter()
        .map(|r| (r.name.get_ref().as_str(), r.expression.get_ref().as_str()))
        .collect();
    for r in &n.rules {
        let name = r.name.get_ref().as_str();
        match old_rules.get(name) {
            None => d.add(
                Severity::Breaking,
                "rule_added",
                None,
                Some(r.name.span()),
                format!("rule `{name}` added: {}", r.expression.get_ref()),
            ),
            Some(e)
                if e.split_whitespace()
                    .ne(r.expression.get_ref().split_whitespace()) =>
            {
                d.add(
                    Severity::Breaking,
                    "rule_changed",
                    None,
                    Some(r.expression.span()),
                    format!("rule `{name}`: {e} → {}", r.expression.get_ref()),
                )
            }
            Some(_) => {}
        }
    }
    for name in old_rules.keys() {
        if !n.rules.iter().any(|r| r.name.get_ref() == name) {
            d.add(
                Severity::NonBreaking,
                "rule_removed",
                None,
                None,
                format!("rule `{name}` removed"),
            );
        }
    }
}
