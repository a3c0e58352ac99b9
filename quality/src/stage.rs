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
    /// Rows a real run loads (`rows_out`, except in audit, which passes every row on): row
    /// counts and freshness are judged on them.
    rows_loaded: u64,
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
            rows_loaded: 0,
            rows_quarantined: 0,
            rows_violating: 0,
        }
    }

    /// A stage that only reports: no rule stops the run or holds rows back, but every
    /// count is what a real run would see (keys claimed, rows loaded).
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
                rows_checked: r.checked,
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

    /// The error when more of the run's rows (all it read) broke a rule than
    /// `max_violation_ratio` allows.
    fn ratio_exceeded(&self) -> Option<Error> {
        let limit = self.contract.spec().max_violation_ratio.as_ref()?;
        let rows = self.rows_in;
        let ratio = self.rows_violating as f64 / rows.max(1) as f64;
        (ratio > *limit.get_ref()).then(|| {
            self.contract.file().error_at(
                limit.span(),
                "max_violation_ratio",
                format!(
                    "{} of {rows} rows ({:.2} %) broke the contract, more than max_violation_ratio {} \
                     allows; nothing was committed",
                    self.rows_violating,
                    ratio * 100.0,
                    limit.get_ref()
                ),
            )
        })
    }

    /// What would stop a real run (in audit, which stops for nothing): `fail` rules that some
    /// row or the run broke, and `max_violation_ratio`.
    fn would_fail(&self) -> Vec<String> {
        let mut failing: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.def.action == Action::Fail && (r.failed > 0 || r.violation.is_some()))
            .map(|r| r.def.name.clone())
            .collect();
        if self.ratio_exceeded().is_some() {
            failing.push("max_violation_ratio".into());
        }
        failing
    }

    /// Rows a real run loads: counted, and their newest freshness value noted.
    fn loaded(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows_loaded += batch.num_rows() as u64;
        match &mut self.newest {
            Some(newest) => newest.update(batch),
            None => Ok(()),
        }
    }

    /// Rows passed on.
    fn pass(&mut self, batch: RecordBatch) -> Result<StageOutput> {
        self.loaded(&batch)?;
        self.rows_out += batch.num_rows() as u64;
        Ok(if batch.num_rows() > 0 {
            StageOutput::pass(batch)
        } else {
            StageOutput::none()
        })
    }

    /// Count rule `r`'s violations in `mask`, then fail the run or mark the rows.
    fn apply(
        &mut self,
        r: usize,
        mask: &[bool],
        batch: &RecordBatch,
        first_row: u64,
        v: &mut Verdicts,
    ) -> Result<()> {
        let audit = self.audit;
        let rule = &mut self.rules[r];
        let count = mask.iter().filter(|b| **b).count() as u64;
        rule.failed += count;
        rule.sample(batch, mask, first_row);
        let action = rule.def.action;
        if action == Action::Fail && !audit {
            return Err(self.fail_error(r, mask, batch, first_row, count));
        }
        // In audit the rows are marked too (and passed on whole later): keys and row counts
        // then come out as in a real run.
        for (row, _) in mask.iter().enumerate().filter(|(_, bad)| **bad) {
            v.broke[row].push(r);
            match action {
                Action::Drop => v.remove[row] = true,
                Action::Quarantine => {
                    v.remove[row] = true;
                    v.quarantined_by[row].get_or_insert(r);
                }
                Action::Warn | Action::Fail => {}
            }
        }
        Ok(())
    }

    /// The error of a `fail` rule: where it is declared, its columns, and the first failing
    /// rows with their values and row numbers in the run.
    fn fail_error(
        &self,
        r: usize,
        mask: &[bool],
        batch: &RecordBatch,
        first_row: u64,
        count: u64,
    ) -> Error {
        let rule = &self.rules[r];
        let shown = rule.explained(batch, mask, first_row, 5);
        let columns = match rule.def.columns.as_slice() {
            [] => String::new(),
            cols => format!(" (column {})", cols.join(", ")),
        };
        self.contract.file().error_at(
            rule.def.span.clone(),
            &rule.def.name,
            format!(
                "contract rule `{}` failed on {count} row(s) of this batch{columns}; \
                 on_violation = \"fail\", so nothing was committed. First: {}",
                rule.def.name,
                shown.join("; ")
            ),
        )
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

/// What the rules made of one batch's rows.
struct Verdicts {
    /// Left out (dropped or quarantined).
    remove: Vec<bool>,
    /// The first quarantining rule each row broke.
    quarantined_by: Vec<Option<usize>>,
    /// Every rule each row broke.
    broke: Vec<Vec<usize>>,
}

impl Verdicts {
    fn new(rows: usize) -> Self {
        Self {
            remove: vec![false; rows],
            quarantined_by: vec![None; rows],
            broke: vec![Vec::new(); rows],
        }
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
            table: self
                .contract
                .spec()
                .quarantine_table
                .as_ref()
                .map(|t| t.get_ref().clone()),
            schema: schema.clone(),
        })
    }

    async fn process(&mut self, batch: RecordBatch) -> Result<StageOutput> {
        let n = batch.num_rows();
        let first_row = self.rows_in;
        self.rows_in += n as u64;
        // Allocated at the first violation: a clean batch costs one mask pass per rule.
        let mut verdicts: Option<Verdicts> = None;
        // Row rules first, key rules last: a row left out never claims its key.
        for r in 0..self.rules.len() {
            if self.rules[r].is_key() {
                continue;
            }
            self.rules[r].checked += n as u64;
            if let Some(mask) = self.rules[r].evaluate(&batch)? {
                let v = verdicts.get_or_insert_with(|| Verdicts::new(n));
                self.apply(r, &mask, &batch, first_row, v)?;
            }
        }
        // Key rules check the rows no other rule left out.
        let removed = verdicts.as_ref().map(|v| v.remove.as_slice());
        let open = n - removed.map_or(0, |rm| rm.iter().filter(|b| **b).count());
        for rule in self.rules.iter_mut().filter(|r| r.is_key()) {
            rule.checked += open as u64;
        }
        for (r, mask) in crate::keys::key_masks(&mut self.rules, &batch, removed)? {
            let v = verdicts.get_or_insert_with(|| Verdicts::new(n));
            self.apply(r, &mask, &batch, first_row, v)?;
        }
        let Some(v) = verdicts else {
            return self.pass(batch);
        };
        self.rows_violating += v.broke.iter().filter(|b| !b.is_empty()).count() as u64;
        if !v.remove.contains(&true) {
            return self.pass(batch);
        }
        let keep = BooleanArray::from(v.remove.iter().map(|b| !b).collect::<Vec<_>>());
        let kept = filter_record_batch(&batch, &keep)?;
        if self.audit {
            // Report on every row, judge run-level rules on what a real run would load.
            self.loaded(&kept)?;
            self.rows_out += n as u64;
            return Ok(StageOutput::pass(batch));
        }
        let quarantine: Vec<(usize, usize, Vec<usize>)> = v
            .quarantined_by
            .iter()
            .enumerate()
            .filter_map(|(row, q)| {
                q.map(|r| {
                    let also = v.broke[row].iter().copied().filter(|x| *x != r).collect();
                    (row, r, also)
                })
            })
            .collect();
        let quarantined = if quarantine.is_empty() {
            None
        } else {
            self.rows_quarantined += quarantine.len() as u64;
            Some(self.quarantine_batch(&batch, &quarantine)?)
        };
        let mut output = self.pass(kept)?;
        output.quarantine = quarantined;
        Ok(output)
    }

    async fn finish(&mut self) -> Result<StageReport> {
        let now = chrono::Utc::now();
        // Row counts and freshness judge what loads, not what was left out.
        let rows = self.rows_loaded;
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
        if let Some(e) = self.ratio_exceeded()
            && !self.audit
        {
            return Err(e);
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
                "would_fail": self.would_fail(),
            }),
        })
    }
}
