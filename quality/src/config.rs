//! The `[contract]` section.

use serde::Deserialize;

/// A data-quality contract checked on every batch before it reaches the destination.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractConfig {
    /// What happens to rows that break a rule: `fail` (default: the run stops, nothing is
    /// committed), `drop` (the rows are left out and counted) or `warn` (loaded and counted).
    #[serde(default)]
    pub on_violation: OnViolation,
    /// Columns that together identify a row: each must be non-NULL, and the combination unique
    /// across the whole run.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Per-column rules.
    #[serde(default)]
    pub columns: Vec<ColumnRules>,
}

/// Rules for one column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRules {
    /// The column.
    pub name: String,
    /// The column must not be NULL.
    #[serde(default)]
    pub required: bool,
    /// Non-NULL values must be unique across the whole run.
    #[serde(default)]
    pub unique: bool,
}

/// What to do with rows that break a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnViolation {
    /// Stop the run; nothing is committed.
    #[default]
    Fail,
    /// Leave the rows out; count them.
    Drop,
    /// Load the rows anyway; count them.
    Warn,
}
