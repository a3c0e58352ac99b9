//! The contract format: what a `[contract]` section or a contract file says, as written
//! (with spans, so every later error can point at file:line:column).

use std::collections::BTreeMap;

use pipe_framework::config::{Datetime, Spanned};
use serde::{Deserialize, Serialize};

/// A data contract: column and table rules checked on every batch before it reaches the
/// destination. Inline in a pipeline's `[contract]`, or in its own file named by `path`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractSpec {
    /// A contract file (relative to the pipeline file) holding the contract; the section
    /// then has no other key.
    pub path: Option<Spanned<String>>,
    /// The contract's own version (semantic versioning; `pipe check --against` reminds you
    /// to bump the major version on a breaking change).
    pub version: Option<Spanned<String>>,
    /// Who answers for the data (a team, an address).
    pub owner: Option<String>,
    /// Free text for humans.
    pub description: Option<String>,
    /// What happens to rows that break a rule (default `fail`); each rule may override it.
    pub on_violation: Option<Action>,
    /// Fail the run when more than this fraction of its rows (0 to 1) broke at least one
    /// rule, whatever the rules' actions (`0.01`: more than 1 %).
    pub max_violation_ratio: Option<Spanned<f64>>,
    /// Where quarantined rows go: `schema.table` in the destination (default: the
    /// destination table's name with `_quarantine` appended, in its schema).
    pub quarantine_table: Option<Spanned<String>>,
    /// Columns that together identify a row: each non-NULL, the combination unique across
    /// the run. Rule `primary_key`.
    #[serde(default)]
    pub primary_key: Vec<Spanned<String>>,
    /// Fewer rows in a run fails it (rule `min_rows`).
    pub min_rows: Option<Spanned<u64>>,
    /// More rows in a run fails it (rule `max_rows`).
    pub max_rows: Option<Spanned<u64>>,
    /// The newest value of a date/timestamp column must be recent (rule `freshness`).
    pub freshness: Option<FreshnessSpec>,
    /// A JSON Schema file every whole row (as a JSON object; NULLs left out) must satisfy
    /// (rule `json_schema`).
    pub json_schema: Option<Spanned<String>>,
    /// Per-column rules.
    #[serde(default)]
    pub columns: Vec<ColumnSpec>,
    /// SQL-expression rules.
    #[serde(default)]
    pub rules: Vec<ExpressionSpec>,
    /// Per-rule actions, by rule name: `{ "o_comment.max_length" = "warn" }`.
    #[serde(default)]
    pub overrides: BTreeMap<Spanned<String>, Action>,
}

/// Rules for one column. Their names are `<column>.<rule>`: `o_totalprice.min`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The column.
    pub name: Spanned<String>,
    /// Free text for humans.
    pub description: Option<String>,
    /// The logical type the column must have (`int64`, `decimal(15,2)`, `string`,
    /// `timestamptz`, ...; see docs/contracts.md). Checked against the data's schema before
    /// any row moves.
    #[serde(rename = "type")]
    pub data_type: Option<Spanned<String>>,
    /// Not NULL.
    #[serde(default)]
    pub required: bool,
    /// Non-NULL values unique across the whole run.
    #[serde(default)]
    pub unique: bool,
    /// Smallest allowed value (number, or a date/timestamp as a string or TOML date).
    pub min: Option<Spanned<Literal>>,
    /// Largest allowed value.
    pub max: Option<Spanned<Literal>>,
    /// Fewest characters.
    pub min_length: Option<Spanned<u64>>,
    /// Most characters.
    pub max_length: Option<Spanned<u64>>,
    /// A regular expression values must match (unanchored: use `^…$` for the whole value).
    pub pattern: Option<Spanned<String>>,
    /// The only values allowed.
    pub allowed: Option<Spanned<Vec<Literal>>>,
    /// Most significant digits a value may have.
    pub precision: Option<Spanned<u8>>,
    /// Most digits after the decimal point a value may have.
    pub scale: Option<Spanned<i8>>,
    /// A JSON Schema file each value (JSON text) must satisfy.
    pub json_schema: Option<Spanned<String>>,
    /// The action for this column's rules (default: the contract's).
    pub on_violation: Option<Action>,
}

impl ColumnSpec {
    /// A column with no rules.
    pub(crate) fn named(name: Spanned<String>) -> Self {
        Self {
            name,
            description: None,
            data_type: None,
            required: false,
            unique: false,
            min: None,
            max: None,
            min_length: None,
            max_length: None,
            pattern: None,
            allowed: None,
            precision: None,
            scale: None,
            json_schema: None,
            on_violation: None,
        }
    }
}

/// A rule written as a SQL expression over a row's columns, evaluated vectorized with
/// DataFusion. Rows where it is false break it; NULL counts as true, as in SQL `CHECK`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpressionSpec {
    /// The rule's name: the reason code in reports and the quarantine.
    pub name: Spanned<String>,
    /// A boolean SQL expression, e.g. `o_totalprice >= 0 AND o_orderdate <= current_date`.
    pub expression: Spanned<String>,
    /// Free text for humans.
    pub description: Option<String>,
    /// The action for this rule (default: the contract's).
    pub on_violation: Option<Action>,
}

/// `freshness`: the newest `column` value must be at most `max_age` old when the run ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessSpec {
    /// A date or timestamp column.
    pub column: Spanned<String>,
    /// `30m`, `6h`, `2d`, `1w` (units s, m, h, d, w).
    pub max_age: Spanned<String>,
}

/// What happens to rows that break a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Load them anyway; count them.
    Warn,
    /// Leave them out; count them.
    Drop,
    /// Leave them out of the table and commit them to the quarantine table, with the rule
    /// and the reason, in the same commit.
    Quarantine,
    /// Stop the run; nothing is committed.
    #[default]
    Fail,
}

impl Action {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Warn => "warn",
            Action::Drop => "drop",
            Action::Quarantine => "quarantine",
            Action::Fail => "fail",
        }
    }
}

/// A value in a rule: a bound or an allowed value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text; also dates and timestamps written as strings.
    Text(String),
    /// A TOML date or datetime (`2024-01-01`).
    Datetime(Datetime),
}

impl std::fmt::Display for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x}"),
            Literal::Text(s) => write!(f, "{s:?}"),
            Literal::Datetime(d) => write!(f, "{d}"),
        }
    }
}

impl Literal {
    /// A number, for comparing bounds.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Literal::Int(i) => Some(*i as f64),
            Literal::Float(x) => Some(*x),
            _ => None,
        }
    }

    /// Text or a date as text, for comparing date bounds.
    pub(crate) fn as_text(&self) -> Option<String> {
        match self {
            Literal::Text(s) => Some(s.clone()),
            Literal::Datetime(d) => Some(d.to_string()),
            _ => None,
        }
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

pub(crate) fn compare_kind(a: &Literal, b: &Literal) -> Option<()> {
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
