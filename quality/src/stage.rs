//! The contract stage: evaluates every rule on each batch as a vectorized mask, then fails the
//! run, drops the offending rows or lets them through with a warning.

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::SchemaRef;
use arrow_select::filter::filter_record_batch;
use async_trait::async_trait;
use pipe_framework::{Error, Result, Stage, StageReport};
use serde::Serialize;
use tracing::warn;

use crate::config::{ContractConfig, OnViolation};
use crate::keys::KeySet;

/// How many failing rows an error message shows.
const SAMPLES: usize = 5;

#[derive(Debug)]
enum Check {
    /// No NULLs in these columns.
    NotNull,
    /// Non-NULL key unique across the run.
    Unique(KeySet),
    /// Non-NULL in every column, and the combination unique across the run.
    PrimaryKey(KeySet),
}

#[derive(Debug)]
struct Rule {
    name: String,
    columns: Vec<String>,
    indices: Vec<usize>,
    check: Check,
    failed: u64,
}

/// Per-rule counts for the run summary.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// The rule's name, used as the reason code.
    pub rule: String,
    /// Its columns.
    pub columns: Vec<String>,
    /// Rows it was evaluated on.
    pub rows_checked: u64,
    /// Rows that broke it.
    pub rows_failed: u64,
}

/// The contract stage; see [`ContractConfig`].
#[derive(Debug)]
pub struct ContractStage {
    config: ContractConfig,
    rules: Vec<Rule>,
    rows_in: u64,
    rows_out: u64,
}

impl ContractStage {
    /// A stage for `config`; its columns are checked against the data in [`Stage::bind`].
    pub fn new(config: ContractConfig) -> Self {
        Self {
            config,
            rules: Vec::new(),
            rows_in: 0,
            rows_out: 0,
        }
    }

    fn reports(&self) -> Vec<RuleReport> {
        self.rules
            .iter()
            .map(|r| RuleReport {
                rule: r.name.clone(),
                columns: r.columns.clone(),
                rows_checked: self.rows_in,
                rows_failed: r.failed,
            })
            .collect()
    }
}

fn index_of(schema: &SchemaRef, name: &str) -> Result<usize> {
    schema
        .index_of(name)
        .ok()
        .or_else(|| {
            schema
                .fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(name))
        })
        .ok_or_else(|| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::user(format!(
                "contract column `{name}` is not in the data; columns: {}",
                names.join(", ")
            ))
        })
}

/// Describe failing rows: `row 12 (id=7, name=NULL)`.
fn samples(batch: &RecordBatch, rule: &Rule, mask: &[bool], first_row: u64) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<_> = rule
        .indices
        .iter()
        .filter_map(|i| ArrayFormatter::try_new(batch.column(*i).as_ref(), &options).ok())
        .collect();
    mask.iter()
        .enumerate()
        .filter(|(_, bad)| **bad)
        .take(SAMPLES)
        .map(|(i, _)| {
            let values: Vec<String> = rule
                .columns
                .iter()
                .zip(&formatters)
                .map(|(c, f)| format!("{c}={}", f.value(i)))
                .collect();
            format!("row {} ({})", first_row + i as u64 + 1, values.join(", "))
        })
        .collect()
}

fn null_mask(columns: &[&ArrayRef], rows: usize) -> Vec<bool> {
    let mut mask = vec![false; rows];
    for col in columns {
        if let Some(nulls) = col.logical_nulls().filter(|n| n.null_count() > 0) {
            for (m, valid) in mask.iter_mut().zip(nulls.iter()) {
                *m |= !valid;
            }
        }
    }
    mask
}

#[async_trait]
impl Stage for ContractStage {
    fn name(&self) -> &str {
        "contract"
    }

    fn bind(&mut self, schema: &SchemaRef) -> Result<()> {
        let mut rules = Vec::new();
        let types = |idx: &[usize]| -> Vec<arrow_schema::DataType> {
            idx.iter()
                .map(|i| schema.field(*i).data_type().clone())
                .collect()
        };
        let key_set = |idx: &[usize]| KeySet::new(&types(idx)).map_err(Error::from);
        if !self.config.primary_key.is_empty() {
            let indices = self
                .config
                .primary_key
                .iter()
                .map(|c| index_of(schema, c))
                .collect::<Result<Vec<_>>>()?;
            rules.push(Rule {
                name: format!("primary_key({})", self.config.primary_key.join(", ")),
                columns: self.config.primary_key.clone(),
                check: Check::PrimaryKey(key_set(&indices)?),
                indices,
                failed: 0,
            });
        }
        for col in &self.config.columns {
            let idx = index_of(schema, &col.name)?;
            if col.required {
                rules.push(Rule {
                    name: format!("required({})", col.name),
                    columns: vec![col.name.clone()],
                    indices: vec![idx],
                    check: Check::NotNull,
                    failed: 0,
                });
            }
            if col.unique {
                rules.push(Rule {
                    name: format!("unique({})", col.name),
                    columns: vec![col.name.clone()],
                    indices: vec![idx],
                    check: Check::Unique(key_set(&[idx])?),
                    failed: 0,
                });
            }
        }
        self.rules = rules;
        Ok(())
    }

    async fn process(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        let rows = batch.num_rows();
        let first_row = self.rows_in;
        self.rows_in += rows as u64;
        let mut bad = vec![false; rows];
        let mut any_bad = false;
        for rule in &mut self.rules {
            let columns: Vec<&ArrayRef> = rule.indices.iter().map(|i| batch.column(*i)).collect();
            let owned: Vec<ArrayRef> = columns.iter().map(|c| (*c).clone()).collect();
            let mask = match &mut rule.check {
                Check::NotNull => null_mask(&columns, rows),
                Check::Unique(keys) => keys.check(&owned, &bad)?,
                Check::PrimaryKey(keys) => {
                    let nulls = null_mask(&columns, rows);
                    let dups = keys.check(&owned, &bad)?;
                    nulls.iter().zip(dups).map(|(n, d)| *n || d).collect()
                }
            };
            let failed = mask.iter().filter(|m| **m).count();
            if failed == 0 {
                continue;
            }
            rule.failed += failed as u64;
            any_bad = true;
            if self.config.on_violation == OnViolation::Fail {
                return Err(Error::user(format!(
                    "contract rule `{}` failed on {failed} row(s) of this batch (on_violation = \
                     \"fail\"; nothing was committed); first: {}",
                    rule.name,
                    samples(&batch, rule, &mask, first_row).join("; ")
                )));
            }
            for (b, m) in bad.iter_mut().zip(mask) {
                *b |= m;
            }
        }
        if !any_bad || self.config.on_violation == OnViolation::Warn {
            self.rows_out += rows as u64;
            return Ok(Some(batch));
        }
        let keep = BooleanArray::from(bad.iter().map(|b| !b).collect::<Vec<_>>());
        let kept = filter_record_batch(&batch, &keep)?;
        self.rows_out += kept.num_rows() as u64;
        Ok((kept.num_rows() > 0).then_some(kept))
    }

    async fn finish(&mut self) -> Result<StageReport> {
        let rules = self.reports();
        for r in rules.iter().filter(|r| r.rows_failed > 0) {
            warn!(rule = %r.rule, failed = r.rows_failed, on_violation = ?self.config.on_violation,
                  "contract violations");
        }
        Ok(StageReport {
            stage: "contract".into(),
            rows_in: self.rows_in,
            rows_out: self.rows_out,
            rows_rejected: self.rows_in - self.rows_out,
            detail: serde_json::json!({
                "on_violation": self.config.on_violation,
                "rules": rules,
            }),
        })
    }
}
