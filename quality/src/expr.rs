//! Rules as DataFusion expressions: SQL rules are parsed and planned against the data's
//! schema; column rules (`min`, `pattern`, `allowed`, ...) are built as logical expressions
//! directly (no SQL text, so no quoting to get wrong). Either way the result is a physical
//! expression evaluated on whole batches: one vectorized kernel pass per rule.

use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Schema};
use chrono::{DateTime, Utc};
use datafusion::common::{Column, DFSchema};
use datafusion::config::Dialect;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable, cast, lit};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;

use crate::spec::Literal;

/// Plans rule expressions; one per contract.
pub(crate) struct Planner {
    state: SessionState,
    /// `now()` and `current_date` in rules mean the run's start.
    now: DateTime<Utc>,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner").field("now", &self.now).finish()
    }
}

/// A planned rule: true where a row satisfies it.
#[derive(Debug, Clone)]
pub(crate) struct Predicate(Arc<dyn PhysicalExpr>);

impl Planner {
    pub(crate) fn new(now: DateTime<Utc>) -> Self {
        Self {
            state: SessionStateBuilder::new().with_default_features().build(),
            now,
        }
    }

    /// Check a SQL expression's syntax (no schema needed).
    pub(crate) fn parse(&self, sql: &str) -> Result<(), String> {
        self.state
            .sql_to_expr(sql, &Dialect::Generic)
            .map(|_| ())
            .map_err(|e| clean(&e.to_string()))
    }

    /// The expression as parsed SQL, printed back: equal for expressions that differ only in
    /// whitespace or formatting. `None` if it does not parse.
    pub(crate) fn normalize(&self, sql: &str) -> Option<String> {
        self.state
            .sql_to_expr(sql, &Dialect::Generic)
            .ok()
            .map(|e| e.to_string())
    }

    /// Plan a SQL boolean expression against `schema`.
    pub(crate) fn sql(&self, sql: &str, schema: &Schema) -> Result<Predicate, String> {
        let df = DFSchema::try_from(schema.clone()).map_err(|e| clean(&e.to_string()))?;
        let expr = self
            .state
            .create_logical_expr(sql, &df)
            .map_err(|e| clean(&e.to_string()))?;
        self.plan(expr, &df)
    }

    /// Plan a logical expression against `schema`.
    pub(crate) fn logical(&self, expr: Expr, schema: &Schema) -> Result<Predicate, String> {
        let df = DFSchema::try_from(schema.clone()).map_err(|e| clean(&e.to_string()))?;
        self.plan(expr, &df)
    }

    fn plan(&self, expr: Expr, df: &DFSchema) -> Result<Predicate, String> {
        refuse_huge_strings(&expr)?;
        let err = |e: datafusion::error::DataFusionError| clean(&e.to_string());
        let context = SimplifyContext::default()
            .with_schema(Arc::new(df.clone()))
            .with_query_execution_start_time(Some(self.now));
        let simplifier = ExprSimplifier::new(context);
        let expr = simplifier.coerce(expr, df).map_err(err)?;
        let expr = simplifier.simplify(expr).map_err(err)?;
        let data_type = expr.to_field(df).map_err(err)?.1.data_type().clone();
        match data_type {
            DataType::Boolean => {}
            DataType::Null => {
                return Err("the expression is always NULL, so no row could ever break it".into());
            }
            other => return Err(format!("the expression is {other}, not a boolean")),
        }
        let physical = self.state.create_physical_expr(expr, df).map_err(err)?;
        Ok(Predicate(physical))
    }
}

impl Predicate {
    /// The columns it reads, by index, in schema order.
    pub(crate) fn columns(&self) -> Vec<usize> {
        let mut columns: Vec<usize> = datafusion::physical_expr::utils::collect_columns(&self.0)
            .iter()
            .map(|c| c.index())
            .collect();
        columns.sort_unstable();
        columns
    }

    /// True where a row breaks the rule: the expression is false (NULL passes, as in SQL
    /// `CHECK`).
    pub(crate) fn violations(&self, batch: &RecordBatch) -> Result<BooleanArray, String> {
        // A kernel that overflows Arrow's offsets panics: that is this rule's error, not a
        // crash of the run.
        let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.0
                .evaluate(batch)
                .and_then(|v| v.into_array(batch.num_rows()))
        }))
        .map_err(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a kernel panicked");
            format!("evaluating the expression failed: {why}")
        })?;
        let value = evaluated.map_err(|e| clean(&e.to_string()))?;
        let result = value
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| format!("the rule evaluated to {}", value.data_type()))?;
        // false → violation; true and NULL → fine.
        let broken = match result.nulls() {
            Some(nulls) => &!result.values() & nulls.inner(),
            None => !result.values(),
        };
        Ok(BooleanArray::new(broken, None))
    }
}

/// The longest string a rule may build per value (`repeat`, `lpad`, `rpad` with a literal
/// length): larger ones would need gigabytes per batch and overflow Arrow's 2 GiB offsets.
const MAX_BUILT_STRING: i64 = 16 * 1024 * 1024;

/// Refuse, before any data moves, string functions whose literal length argument would build
/// values larger than [`MAX_BUILT_STRING`] (`length(repeat(name, 2000000000)) > 0`).
fn refuse_huge_strings(expr: &Expr) -> Result<(), String> {
    use datafusion::common::ScalarValue;
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut problem = None;
    let _ = expr.apply(|e| {
        if let Expr::ScalarFunction(f) = e {
            let name = f.name();
            if matches!(name, "repeat" | "lpad" | "rpad")
                && let Some(Expr::Literal(value, _)) = f.args.get(1)
            {
                let n = match value {
                    ScalarValue::Int64(Some(n)) => Some(*n),
                    ScalarValue::Int32(Some(n)) => Some(i64::from(*n)),
                    _ => None,
                };
                if let Some(n) = n.filter(|n| *n > MAX_BUILT_STRING) {
                    problem = Some(format!(
                        "{name}(…, {n}) would build strings of up to {n} characters per row; \
                         rules may build at most {MAX_BUILT_STRING} per value"
                    ));
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    problem.map_or(Ok(()), Err)
}

/// A column reference by exact name (no SQL identifier folding).
pub(crate) fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// `literal` as an expression of the column's type: numbers as they are, text cast
/// explicitly to temporal types (so `"2024-01-01"` is a date, never compared as text).
pub(crate) fn literal(literal: &Literal, column_type: &DataType) -> Expr {
    let value = match literal {
        Literal::Bool(b) => lit(*b),
        Literal::Int(i) => lit(*i),
        Literal::Float(x) => lit(*x),
        Literal::Text(s) => lit(s.clone()),
        Literal::Datetime(d) => lit(d.to_string()),
    };
    let temporal = matches!(
        column_type,
        DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
            | DataType::Time32(_)
            | DataType::Time64(_)
    );
    match literal {
        Literal::Text(_) | Literal::Datetime(_) if temporal => cast(value, column_type.clone()),
        _ => value,
    }
}

/// DataFusion's messages carry a category prefix and sometimes a backtrace hint; keep the
/// sentence.
fn clean(message: &str) -> String {
    let m = message.lines().next().unwrap_or(message);
    for prefix in [
        "Error during planning: ",
        "SQL error: ",
        "Schema error: ",
        "Arrow error: ",
        "Execution error: ",
        "Optimizer rule 'simplify_expressions' failed\ncaused by\n",
    ] {
        if let Some(rest) = m.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    m.to_string()
}
