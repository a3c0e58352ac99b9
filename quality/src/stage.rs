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
        let on_violation = self.config.on_violation;
        let mut bad = vec![false; rows];
        let no_skip = vec![false; rows];
        // Keys remembered by this batch: (rule, row, key), forgotten again for dropped rows.
        let mut added: Vec<(usize, usize, u128)> = Vec::new();
        // NULL checks first, then uniqueness among the rows still good: under `drop`, a row
        // left out for a NULL (or a duplicate) never claims its key.
        for keys_pass in [false, true] {
            for (r, rule) in self.rules.iter_mut().enumerate() {
                let columns: Vec<&ArrayRef> =
                    rule.indices.iter().map(|i| batch.column(*i)).collect();
                let mask = match (&mut rule.check, keys_pass) {
                    (Check::NotNull | Check::PrimaryKey(_), false) => null_mask(&columns, rows),
                    (Check::Unique(keys) | Check::PrimaryKey(keys), true) => {
                        let owned: Vec<ArrayRef> = columns.iter().map(|c| (*c).clone()).collect();
                        let skip = if on_violation == OnViolation::Drop {
                            &bad
                        } else {
                            &no_skip
                        };
                        let mut fresh = Vec::new();
                        let dups = keys.check(&owned, skip, &mut fresh)?;
                        added.extend(fresh.into_iter().map(|(row, key)| (r, row, key)));
                        dups
                    }
                    _ => continue,
                };
                let failed = mask.iter().filter(|m| **m).count();
                if failed == 0 {
                    continue;
                }
                rule.failed += failed as u64;
                if on_violation == OnViolation::Fail {
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
        }
        if on_violation == OnViolation::Warn || !bad.contains(&true) {
            self.rows_out += rows as u64;
            return Ok(Some(batch));
        }
        for (r, row, key) in added {
            if bad[row]
                && let Check::Unique(keys) | Check::PrimaryKey(keys) = &mut self.rules[r].check
            {
                keys.forget(std::iter::once(key));
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Array, Int64Array};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;
    use crate::config::ColumnRules;

    fn batch(keys: &[i64], cust: &[Option<i64>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("c", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(keys.to_vec())),
                Arc::new(Int64Array::from(cust.to_vec())),
            ],
        )
        .expect("batch")
    }

    fn stage(on_violation: OnViolation) -> ContractStage {
        let mut stage = ContractStage::new(ContractConfig {
            on_violation,
            primary_key: vec!["k".into()],
            columns: vec![ColumnRules {
                name: "c".into(),
                required: true,
                unique: false,
            }],
        });
        stage.bind(&batch(&[], &[]).schema()).expect("binds");
        stage
    }

    #[tokio::test]
    async fn a_dropped_row_does_not_claim_its_key() {
        let mut s = stage(OnViolation::Drop);
        // Key 1 first arrives with a NULL required column (dropped), then valid: kept.
        let out = s
            .process(batch(&[1, 2], &[None, Some(5)]))
            .await
            .expect("ok")
            .expect("rows");
        assert_eq!(out.num_rows(), 1);
        let out = s
            .process(batch(&[1, 2], &[Some(7), Some(8)]))
            .await
            .expect("ok")
            .expect("rows");
        let keys = out
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        assert_eq!(
            keys.values().to_vec(),
            vec![1],
            "key 1 is new; key 2 is a duplicate"
        );
        let report = s.finish().await.expect("report");
        assert_eq!(
            (report.rows_in, report.rows_out, report.rows_rejected),
            (4, 2, 2)
        );
    }

    #[tokio::test]
    async fn fail_names_the_rule_and_the_rows() {
        let mut s = stage(OnViolation::Fail);
        let err = s
            .process(batch(&[1, 1], &[Some(1), Some(2)]))
            .await
            .expect_err("dup");
        assert!(
            err.message()
                .contains("`primary_key(k)` failed on 1 row(s)"),
            "{err:?}"
        );
        assert!(err.message().contains("row 2 (k=1)"), "{err:?}");
    }

    #[tokio::test]
    async fn warn_loads_everything_and_counts() {
        let mut s = stage(OnViolation::Warn);
        let out = s
            .process(batch(&[1, 1], &[None, Some(2)]))
            .await
            .expect("ok")
            .expect("rows");
        assert_eq!(out.num_rows(), 2);
        let report = s.finish().await.expect("report");
        assert_eq!(report.rows_rejected, 0);
        assert_eq!(report.detail["rules"][0]["rows_failed"], 1);
        assert_eq!(report.detail["rules"][1]["rows_failed"], 1);
        assert!(out.column(1).is_null(0));
    }
}
