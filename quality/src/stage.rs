//! The contract stage: every rule evaluated on each batch as a vectorized mask; then rows
//! are failed, quarantined, dropped or let through with a warning, per rule.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow_select::filter::filter_record_batch;
use async_trait::async_trait;
use pipe_framework::{Error, QuarantineSpec, Result, RunContext, Stage, StageOutput, StageReport};
use serde::Serialize;
use tracing::warn;

use crate::contract::{Contract, RuleKind};
use crate::expr::Planner;
use crate::freshness::Newest;
use crate::rules::{self, Bound};
use crate::spec::Action;

/// The columns a quarantine row has besides the original ones.
pub const QUARANTINE_COLUMNS: [&str; 4] = [
    "_pipe_rule",
    "_pipe_reason",
    "_pipe_run_id",
    "_pipe_loaded_at",
];

/// Per-rule counts for the run summary.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// The rule's name, used as the reason code.
    pub rule: String,
    /// Its kind (`required`, `min`, `expression`, `min_rows`, ...).
    pub kind: &'static str,
    /// Checked per row (`row`), once on the schema (`schema`) or once per run (`run`).
    pub level: &'static str,
    /// Its columns.
    pub columns: Vec<String>,
    /// What a violation does.
    pub on_violation: Action,
    /// Rows it was evaluated on.
    pub rows_checked: u64,
    /// Rows that broke it.
    pub rows_failed: u64,
    /// A schema- or run-level violation (type, row count, freshness).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violation: Option<String>,
    /// The first few failing rows, explained.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<String>,
}

/// The contract stage; see [`Contract`].
#[derive(Debug)]
pub struct ContractStage {
    contract: Contract,
    /// Report every violation, never stop or hold rows back (`pipe check --sample`).
    audit: bool,
    rules: Vec<Bound>,
    newest: Option<Newest>,
    quarantine: Option<SchemaRef>,
    run_id: String,
    loaded_at: i64,
    rows_in: u64,
    rows_out: u64,
    rows_quarantined: u64,
    rows_violating: u64,
}

impl ContractStage {
    /// A stage enforcing `contract`.
    pub fn new(contract: Contract) -> Self {
        Self {
            contract,
            audit: false,
            rules: Vec::new(),
            newest: None,
            quarantine: None,
            run_id: String::new(),
            loaded_at: 0,
            rows_in: 0,
            rows_out: 0,
            rows_quarantined: 0,
            rows_violating: 0,
        }
    }

    /// A stage that only reports: no rule stops the run or holds rows back.
    pub fn audit(contract: Contract) -> Self {
        Self {
            audit: true,
            ..Self::new(contract)
        }
    }

    /// Per-rule counts so far.
    pub fn reports(&self) -> Vec<RuleReport> {
        self.rules
            .iter()
            .map(|r| RuleReport {
                rule: r.def.name.clone(),
                kind: r.def.kind.code(),
                level: match r.def.kind {
                    RuleKind::Type(_) => "schema",
                    ref k if k.is_table_level() => "run",
                    _ => "row",
                },
                columns: r.def.columns.clone(),
                on_violation: r.def.action,
                rows_checked: if r.def.kind.is_table_level() {
                    0
                } else {
                    self.rows_in
                },
                rows_failed: r.failed,
                violation: r.violation.clone(),
                samples: r.samples.clone(),
            })
            .collect()
    }

    fn violated(&self, rule: &Bound) -> Result<()> {
        let Some(why) = &rule.violation else {
            return Ok(());
        };
        if rule.def.action == Action::Fail && !self.audit {
            return Err(self.contract.file().error_at(
                rule.def.span.clone(),
                &rule.def.name,
                format!(
                    "contract rule `{}` failed: {why} (nothing was committed)",
                    rule.def.name
                ),
            ));
        }
        warn!(rule = %rule.def.name, %why, "contract violation");
        Ok(())
    }

    fn quarantine_batch(
        &self,
        batch: &RecordBatch,
        rows: &[(usize, usize, Vec<usize>)],
    ) -> Result<RecordBatch> {
        let Some(schema) = &self.quarantine else {
            return Err(Error::internal("quarantining without a quarantine schema"));
        };
        let indices = UInt32Array::from_iter_values(rows.iter().map(|(row, _, _)| *row as u32));
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| arrow_select::take::take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<_, _>>()?;
        let rule_names = StringArray::from_iter_values(
            rows.iter().map(|(_, r, _)| self.rules[*r].def.name.clone()),
        );
        let reasons = StringArray::from_iter_values(rows.iter().map(|(row, r, also)| {
            let mut why = self.rules[*r].explain(batch, *row);
            if !also.is_empty() {
                let names: Vec<&str> = also
                    .iter()
                    .map(|a| self.rules[*a].def.name.as_str())
                    .collect();
                why.push_str(&format!(" (also broke: {})", names.join(", ")));
            }
            why
        }));
        let n = rows.len();
        columns.push(Arc::new(rule_names));
        columns.push(Arc::new(reasons));
        columns.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(&self.run_id, n),
        )));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(self.loaded_at, n))
                .with_timezone("UTC"),
        ));
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

fn quarantine_schema(data: &Schema) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = data
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    for name in QUARANTINE_COLUMNS {
        if data
            .fields()
            .iter()
            .any(|f| f.name().eq_ignore_ascii_case(name))
        {
            return Err(Error::user(format!(
                "the data has a column `{name}`, which the quarantine table needs for itself"
            )));
        }
    }
    fields.push(Field::new(QUARANTINE_COLUMNS[0], DataType::Utf8, false));
    fields.push(Field::new(QUARANTINE_COLUMNS[1], DataType::Utf8, false));
    fields.push(Field::new(QUARANTINE_COLUMNS[2], DataType::Utf8, false));
    fields.push(Field::new(
        QUARANTINE_COLUMNS[3],
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    Ok(Arc::new(Schema::new(fields)))
}

#[async_trait]
impl Stage for ContractStage {
    fn name(&self) -> &str {
        "contract"
    }

    fn bind(&mut self, schema: &SchemaRef, ctx: &RunContext) -> Result<()> {
        let planner = Planner::new(ctx.started_at);
        self.rules = rules::bind(&self.contract, schema, &planner)?;
        self.run_id = ctx.run_id.clone();
        self.loaded_at = ctx.started_at.timestamp_micros();
        for rule in &self.rules {
            self.violated(rule)?;
        }
        self.newest = self.rules.iter().find_map(|r| match r.def.kind {
            RuleKind::Freshness(_) => r.indices.first().map(|i| Newest::new(*i)),
            _ => None,
        });
        let quarantines = !self.audit
            && self
                .rules
                .iter()
                .any(|r| r.def.action == Action::Quarantine);
        self.quarantine = quarantines.then(|| quarantine_schema(schema)).transpose()?;
        Ok(())
    }

    fn quarantine(&self) -> Option<QuarantineSpec> {
        self.quarantine.as_ref().map(|schema| QuarantineSpec {
            table: self.contract.spec().quarantine_table.clone(),
            schema: schema.clone(),
        })
    }

    async fn process(&mut self, batch: RecordBatch) -> Result<StageOutput> {
        let n = batch.num_rows();
        let first_row = self.rows_in;
        self.rows_in += n as u64;
        if let Some(newest) = &mut self.newest {
            newest.update(&batch)?;
        }
        // Rows left out (dropped or quarantined); the first quarantining rule per row; every
        // rule each row broke.
        let mut remove = vec![false; n];
        let mut quarantined_by: Vec<Option<usize>> = vec![None; n];
        let mut broke: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut added: Vec<(usize, usize, u128)> = Vec::new();
        // Row rules first, key rules last: a row left out never claims its key.
        for keys_pass in [false, true] {
            for r in 0..self.rules.len() {
                let rule = &mut self.rules[r];
                if rule.is_key() != keys_pass {
                    continue;
                }
                let mut fresh = Vec::new();
                let mask = rule.evaluate(&batch, &remove, &mut fresh)?;
                added.extend(fresh.into_iter().map(|(row, key)| (r, row, key)));
                let Some(mask) = mask else { continue };
                let count = mask.iter().filter(|b| **b).count() as u64;
                rule.failed += count;
                rule.sample(&batch, &mask, first_row);
                let action = rule.def.action;
                if action == Action::Fail && !self.audit {
                    let shown: Vec<String> = mask
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| **b)
                        .take(5)
                        .map(|(row, _)| {
                            format!(
                                "row {}: {}",
                                first_row + row as u64 + 1,
                                rule.explain(&batch, row)
                            )
                        })
                        .collect();
                    return Err(Error::user(format!(
                        "contract rule `{}` failed on {count} row(s) of this batch (on_violation = \"fail\"; \
                         nothing was committed); first: {}",
                        rule.def.name,
                        shown.join("; ")
                    )));
                }
                for (row, bad) in mask.iter().enumerate() {
                    if !bad {
                        continue;
                    }
                    broke[row].push(r);
                    if self.audit {
                        continue;
                    }
                    match action {
                        Action::Drop => remove[row] = true,
                        Action::Quarantine => {
                            remove[row] = true;
                            quarantined_by[row].get_or_insert(r);
                        }
                        Action::Warn | Action::Fail => {}
                    }
                }
            }
        }
        self.rows_violating += broke.iter().filter(|b| !b.is_empty()).count() as u64;
        if !remove.contains(&true) {
            self.rows_out += n as u64;
            return Ok(StageOutput::pass(batch));
        }
        for (r, row, key) in added {
            if remove[row] {
                self.rules[r].forget(key);
            }
        }
        let quarantine: Vec<(usize, usize, Vec<usize>)> = quarantined_by
            .iter()
            .enumerate()
            .filter_map(|(row, q)| {
                q.map(|r| {
                    (
                        row,
                        r,
                        broke[row].iter().copied().filter(|x| *x != r).collect(),
                    )
                })
            })
            .collect();
        let quarantined = if quarantine.is_empty() {
            None
        } else {
            self.rows_quarantined += quarantine.len() as u64;
            Some(self.quarantine_batch(&batch, &quarantine)?)
        };
        let keep = BooleanArray::from(remove.iter().map(|b| !b).collect::<Vec<_>>());
        let kept = filter_record_batch(&batch, &keep)?;
        self.rows_out += kept.num_rows() as u64;
        Ok(StageOutput {
            pass: (kept.num_rows() > 0).then_some(kept),
            quarantine: quarantined,
        })
    }

    async fn finish(&mut self) -> Result<StageReport> {
        let now = chrono::Utc::now();
        let rows = self.rows_in;
        let newest = self.newest.as_ref().and_then(Newest::value);
        for rule in &mut self.rules {
            rule.violation = rule.violation.take().or_else(|| match &rule.def.kind {
                RuleKind::MinRows(min) if rows < *min => {
                    Some(format!("the run has {rows} rows, fewer than {min}"))
                }
                RuleKind::MaxRows(max) if rows > *max => {
                    Some(format!("the run has {rows} rows, more than {max}"))
                }
                RuleKind::Freshness(age) => match newest {
                    None => Some(format!(
                        "no `{}` value to judge freshness by",
                        rule.def.columns[0]
                    )),
                    Some(t) if now - t > *age => Some(format!(
                        "the newest `{}` is {}, older than {}",
                        rule.def.columns[0],
                        t.to_rfc3339(),
                        crate::freshness::describe(*age)
                    )),
                    Some(_) => None,
                },
                _ => None,
            });
        }
        for rule in &self.rules {
            if rule.def.kind.is_table_level() && !matches!(rule.def.kind, RuleKind::Type(_)) {
                self.violated(rule)?;
            }
        }
        if let Some(limit) = &self.contract.spec().max_violation_ratio
            && rows > 0
            && !self.audit
        {
            let ratio = self.rows_violating as f64 / rows as f64;
            if ratio > *limit.get_ref() {
                return Err(self.contract.file().error_at(
                    limit.span(),
                    "max_violation_ratio",
                    format!(
                        "{} of {rows} rows ({:.2} %) broke the contract, more than max_violation_ratio {} \
                         allows; nothing was committed",
                        self.rows_violating,
                        ratio * 100.0,
                        limit.get_ref()
                    ),
                ));
            }
        }
        let rules = self.reports();
        for r in rules.iter().filter(|r| r.rows_failed > 0) {
            warn!(rule = %r.rule, failed = r.rows_failed, on_violation = r.on_violation.as_str(), "contract violations");
        }
        Ok(StageReport {
            stage: "contract".into(),
            rows_in: self.rows_in,
            rows_out: self.rows_out,
            rows_rejected: self.rows_in - self.rows_out,
            rows_quarantined: self.rows_quarantined,
            detail: serde_json::json!({
                "contract": self.contract.file().path(),
                "version": self.contract.spec().version.as_ref().map(|v| v.get_ref()),
                "rows_violating": self.rows_violating,
                "rules": rules,
            }),
        })
    }
}
