//! Rules bound to the data's schema: each becomes a vectorized check producing a mask of
//! the rows that break it, and explains a broken row on demand (only broken rows are ever
//! formatted).

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::Decimal128Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Schema};
use datafusion::functions::regex::expr_fn::regexp_like;
use datafusion::functions::unicode::expr_fn::character_length;
use datafusion::logical_expr::lit;
use pipe_framework::{Error, Result};

use crate::contract::{Contract, RuleDef, RuleKind};
use crate::expr::{self, Planner, Predicate};
use crate::json::JsonCheck;
use crate::keys::KeySet;
use crate::spec::Literal;
use crate::types::LogicalType;

/// How a bound rule is checked.
#[derive(Debug)]
pub(crate) enum Check {
    /// Checked on the schema at bind time (types).
    Schema,
    /// No NULLs in these columns.
    NotNull,
    /// Non-NULL keys unique across the run; `nulls_fail`: a NULL in a key column breaks it
    /// too (primary keys).
    Keys { keys: KeySet, nulls_fail: bool },
    /// A DataFusion predicate.
    Predicate(Predicate),
    /// Values fit decimal(precision, scale).
    Precision { precision: u32, scale: i8 },
    /// JSON Schema validation of a column's JSON text or of whole rows.
    Json(JsonCheck),
    /// Checked when the run's rows are all in: row counts and freshness.
    Run,
}

/// One rule, ready to evaluate.
#[derive(Debug)]
pub(crate) struct Bound {
    pub def: RuleDef,
    pub check: Check,
    /// The columns its explanations show.
    pub indices: Vec<usize>,
    /// Rows it checked so far (0 for schema- and run-level rules).
    pub checked: u64,
    /// Rows that broke it so far.
    pub failed: u64,
    /// The first few explanations, for reports.
    pub samples: Vec<String>,
    /// A schema- or run-level violation (type mismatch, row count, freshness).
    pub violation: Option<String>,
    /// Explanations computed while checking (JSON Schema errors), by row of the batch.
    reasons: HashMap<usize, String>,
}

/// Bind every rule of `contract` to `schema`; errors point at the rule in the contract.
pub(crate) fn bind(contract: &Contract, schema: &Schema, planner: &Planner) -> Result<Vec<Bound>> {
    contract
        .rules()
        .iter()
        .map(|def| {
            bind_one(contract, def, schema, planner)
                .map_err(|m| contract.file().error_at(def.span.clone(), &def.name, m))
        })
        .collect()
}

fn index_of(schema: &Schema, name: &str) -> std::result::Result<usize, String> {
    pipe_framework::columns::find(schema, name).ok_or_else(|| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        format!(
            "column `{name}` is not in the data; columns: {}",
            names.join(", ")
        )
    })
}

fn bind_one(
    contract: &Contract,
    def: &RuleDef,
    schema: &Schema,
    planner: &Planner,
) -> std::result::Result<Bound, String> {
    let indices = def
        .columns
        .iter()
        .map(|c| index_of(schema, c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let field = indices.first().map(|i| schema.field(*i));
    let col = || field.map(|f| expr::column(f.name()));
    let data_type = field
        .map(|f| f.data_type().clone())
        .unwrap_or(DataType::Null);
    let logical = field.map(LogicalType::of_field);
    let is_text = matches!(logical, Some(LogicalType::String | LogicalType::Json));
    let need_text = |what: &str| {
        if is_text {
            Ok(())
        } else {
            Err(format!(
                "{what} applies to text columns; `{}` is {}",
                def.columns[0],
                logical.as_ref().map_or("?".into(), |l| l.to_string())
            ))
        }
    };
    let predicate = |e| planner.logical(e, schema);
    let mut violation = None;
    let check = match &def.kind {
        RuleKind::Type(declared) => {
            let actual = logical.clone().unwrap_or(LogicalType::Null);
            if !actual.widens_to(declared) {
                violation = Some(format!(
                    "`{}` is {actual} in the data, not {declared}",
                    def.columns[0]
                ));
            }
            Check::Schema
        }
        RuleKind::Required => Check::NotNull,
        RuleKind::Unique | RuleKind::PrimaryKey => {
            let types: Vec<DataType> = indices
                .iter()
                .map(|i| schema.field(*i).data_type().clone())
                .collect();
            Check::Keys {
                keys: KeySet::new(&types).map_err(|e| e.to_string())?,
                nulls_fail: def.kind == RuleKind::PrimaryKey,
            }
        }
        RuleKind::Min(b) | RuleKind::Max(b) => {
            check_bound(b, logical.as_ref(), &def.columns[0])?;
            let value = expr::literal(b, &data_type);
            let e = col().ok_or("no column")?;
            let e = if matches!(def.kind, RuleKind::Min(_)) {
                e.gt_eq(value)
            } else {
                e.lt_eq(value)
            };
            Check::Predicate(predicate(e)?)
        }
        RuleKind::MinLength(n) | RuleKind::MaxLength(n) => {
            need_text("a length rule")?;
            let len = character_length(col().ok_or("no column")?);
            let n = lit(i64::try_from(*n).unwrap_or(i64::MAX));
            let e = if matches!(def.kind, RuleKind::MinLength(_)) {
                len.gt_eq(n)
            } else {
                len.lt_eq(n)
            };
            Check::Predicate(predicate(e)?)
        }
        RuleKind::Pattern(p) => {
            need_text("`pattern`")?;
            Check::Predicate(predicate(regexp_like(
                col().ok_or("no column")?,
                lit(p.clone()),
                None,
            ))?)
        }
        RuleKind::Allowed(values) => {
            for v in values {
                check_bound(v, logical.as_ref(), &def.columns[0])?;
            }
            let list = values
                .iter()
                .map(|v| expr::literal(v, &data_type))
                .collect();
            Check::Predicate(predicate(col().ok_or("no column")?.in_list(list, false))?)
        }
        RuleKind::Precision { precision, scale } => match logical {
            Some(LogicalType::Decimal(_, s)) if !(0..=38).contains(&s) => {
                return Err(format!(
                    "precision and scale check decimals with a scale of 0 to 38; `{}` has {s}",
                    def.columns[0]
                ));
            }
            Some(LogicalType::Decimal(_, s)) => Check::Precision {
                precision: u32::from(precision.unwrap_or(38)),
                scale: scale.unwrap_or(s),
            },
            Some(LogicalType::Int { .. }) => Check::Precision {
                precision: u32::from(precision.unwrap_or(38)),
                scale: scale.unwrap_or(0),
            },
            other => {
                return Err(format!(
                    "precision and scale apply to decimal and integer columns; `{}` is {}",
                    def.columns[0],
                    other.map_or("?".into(), |l| l.to_string())
                ));
            }
        },
        RuleKind::JsonSchema(_) => {
            let validator = contract
                .json_schema(&def.name)
                .ok_or("the JSON Schema was not compiled")?
                .clone();
            if field.is_some() {
                need_text("a JSON Schema")?;
            }
            Check::Json(JsonCheck::new(validator, indices.first().copied()))
        }
        RuleKind::Expression(sql) => Check::Predicate(planner.sql(sql, schema)?),
        RuleKind::MinRows(_) | RuleKind::MaxRows(_) => Check::Run,
        RuleKind::Freshness(_) => {
            if !matches!(
                logical,
                Some(LogicalType::Date | LogicalType::Timestamp | LogicalType::Timestamptz)
            ) {
                return Err(format!(
                    "freshness needs a date or timestamp column; `{}` is {}",
                    def.columns[0],
                    logical.map_or("?".into(), |l| l.to_string())
                ));
            }
            Check::Run
        }
    };
    let shown = match &check {
        Check::Predicate(p) if indices.is_empty() => p.columns(),
        _ => indices.clone(),
    };
    Ok(Bound {
        def: def.clone(),
        check,
        indices: shown,
        checked: 0,
        failed: 0,
        samples: Vec::new(),
        violation,
        reasons: HashMap::new(),
    })
}

/// A bound or allowed value must suit the column: numbers for numeric columns, text (or
/// TOML dates) for text and temporal ones.
fn check_bound(
    value: &Literal,
    column: Option<&LogicalType>,
    name: &str,
) -> std::result::Result<(), String> {
    use LogicalType as L;
    let ok = matches!(
        (column, value),
        (
            Some(L::Int { .. } | L::Float(_) | L::Decimal(..)),
            Literal::Int(_) | Literal::Float(_)
        ) | (
            Some(L::Date | L::Time | L::Timestamp | L::Timestamptz | L::String | L::Json),
            Literal::Text(_) | Literal::Datetime(_),
        ) | (Some(L::Bool), Literal::Bool(_))
            | (Some(L::Null), _)
    );
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value} cannot be compared with `{name}` ({})",
            column.map_or("?".into(), |c| c.to_string())
        ))
    }
}

impl Bound {
    /// Whether it checks keys (evaluated after the other row rules, so rows they leave
    /// out never claim a key).
    pub(crate) fn is_key(&self) -> bool {
        matches!(self.check, Check::Keys { .. })
    }

    /// Rows of `batch` that break this rule (`None`: none, or not a per-row rule). Key rules
    /// are evaluated together by [`key_masks`].
    pub(crate) fn evaluate(&mut self, batch: &RecordBatch) -> Result<Option<Vec<bool>>> {
        self.reasons.clear();
        let columns: Vec<ArrayRef> = self
            .indices
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        let mask = match &mut self.check {
            Check::Schema | Check::Run | Check::Keys { .. } => return Ok(None),
            Check::NotNull => null_mask(&columns, batch.num_rows()),
            Check::Predicate(p) => {
                let broken = p.violations(batch).map_err(|m| self.eval_error(m))?;
                if broken.true_count() == 0 {
                    return Ok(None);
                }
                broken.values().iter().collect()
            }
            Check::Precision { precision, scale } => {
                precision_mask(&columns[0], *precision, *scale)?
            }
            Check::Json(check) => check.evaluate(batch, &mut self.reasons)?,
        };
        Ok(mask.contains(&true).then_some(mask))
    }

    fn eval_error(&self, message: String) -> Error {
        Error::user(format!(
            "evaluating contract rule `{}`: {message}",
            self.def.name
        ))
    }

    /// Why row `row` of `batch` breaks this rule, naming the values involved.
    pub(crate) fn explain(&self, batch: &RecordBatch, row: usize) -> String {
        if let Some(r) = self.reasons.get(&row) {
            return r.clone();
        }
        let options = FormatOptions::default().with_null("NULL");
        let value = |i: usize| {
            ArrayFormatter::try_new(batch.column(i).as_ref(), &options)
                .map(|f| f.value(row).to_string())
                .unwrap_or_else(|_| "?".into())
        };
        let name = |i: usize| batch.schema().field(i).name().clone();
        let first = self.indices.first().copied();
        let shown = || first.map_or(String::new(), |i| format!("`{}` = {}", name(i), value(i)));
        match &self.def.kind {
            RuleKind::Required => format!(
                "{} is NULL",
                first.map_or("?".into(), |i| format!("`{}`", name(i)))
            ),
            RuleKind::Unique | RuleKind::PrimaryKey => {
                let parts: Vec<String> = self
                    .indices
                    .iter()
                    .map(|i| format!("{}={}", name(*i), value(*i)))
                    .collect();
                let null = |i: usize| {
                    batch
                        .column(i)
                        .logical_nulls()
                        .is_some_and(|n| n.is_null(row))
                };
                if self.indices.iter().any(|i| null(*i)) {
                    format!("key ({}) has a NULL", parts.join(", "))
                } else {
                    format!("key ({}) appears earlier in the run", parts.join(", "))
                }
            }
            RuleKind::Min(b) => format!("{} is below the minimum {b}", shown()),
            RuleKind::Max(b) => format!("{} is above the maximum {b}", shown()),
            RuleKind::MinLength(n) => format!("{} is shorter than {n} characters", shown()),
            RuleKind::MaxLength(n) => format!("{} is longer than {n} characters", shown()),
            RuleKind::Pattern(p) => format!("{} does not match /{p}/", shown()),
            RuleKind::Allowed(values) => {
                let list: Vec<String> = values.iter().take(8).map(|v| v.to_string()).collect();
                let more = if values.len() > 8 { ", …" } else { "" };
                format!("{} is not one of {}{more}", shown(), list.join(", "))
            }
            RuleKind::Precision { .. } => match &self.check {
                Check::Precision { precision, scale } => {
                    format!("{} does not fit decimal({precision},{scale})", shown())
                }
                _ => shown(),
            },
            RuleKind::Expression(sql) => {
                let parts: Vec<String> = self
                    .indices
                    .iter()
                    .map(|i| format!("{}={}", name(*i), value(*i)))
                    .collect();
                format!("`{sql}` is false for ({})", parts.join(", "))
            }
            _ => self.def.name.clone(),
        }
    }

    /// Remember up to three explanations for the report.
    pub(crate) fn sample(&mut self, batch: &RecordBatch, mask: &[bool], first_row: u64) {
        let room = 3usize.saturating_sub(self.samples.len());
        if room > 0 {
            let more = self.explained(batch, mask, first_row, room);
            self.samples.extend(more);
        }
    }

    /// The first `limit` rows of `mask`, explained: `row N: why` with N the row's number in
    /// the run (`first_row` rows came before this batch).
    pub(crate) fn explained(
        &self,
        batch: &RecordBatch,
        mask: &[bool],
        first_row: u64,
        limit: usize,
    ) -> Vec<String> {
        mask.iter()
            .enumerate()
            .filter(|(_, bad)| **bad)
            .take(limit)
            .map(|(row, _)| {
                format!(
                    "row {}: {}",
                    first_row + row as u64 + 1,
                    self.explain(batch, row)
                )
            })
            .collect()
    }
}

fn null_mask(columns: &[ArrayRef], rows: usize) -> Vec<bool> {
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

/// Values that do not fit decimal(precision, scale): more fractional digits than `scale`
/// (non-zero ones), or `precision - scale` integer digits exceeded.
fn precision_mask(column: &ArrayRef, precision: u32, scale: i8) -> Result<Vec<bool>> {
    let source_scale = match column.data_type() {
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s) => *s,
        _ => 0,
    };
    let as_decimal = match column.data_type() {
        DataType::Decimal128(..) => column.clone(),
        // Lossless for integers and narrower decimals; a Decimal256 value beyond 38 digits
        // becomes NULL here and is flagged below (it fits no precision up to 38).
        _ => arrow_cast::cast(column, &DataType::Decimal128(38, source_scale))?,
    };
    let values = as_decimal.as_primitive::<Decimal128Type>();
    let extra = i32::from(source_scale) - i32::from(scale);
    let pow = |e: u32| 10i128.checked_pow(e);
    let limit = pow(precision);
    let mut mask = vec![false; values.len()];
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v else {
            mask[i] = column.is_valid(i);
            continue;
        };
        let scaled = if extra > 0 {
            match pow(extra as u32) {
                Some(d) if v % d == 0 => Some(v / d),
                Some(_) => None,
                None => (v == 0).then_some(0),
            }
        } else {
            pow((-extra) as u32).and_then(|m| v.checked_mul(m))
        };
        mask[i] = match (scaled, limit) {
            (Some(s), Some(l)) => s.unsigned_abs() >= l.unsigned_abs(),
            (Some(_), None) => false,
            (None, _) => true,
        };
    }
    Ok(mask)
}
