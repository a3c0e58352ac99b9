//! `replace_where`: a SQL predicate over the table's columns, parsed and evaluated with
//! DataFusion (the engine delta-rs itself uses for predicates).

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use deltalake::datafusion::common::DFSchema;
use deltalake::datafusion::physical_plan::PhysicalExpr;
use deltalake::datafusion::prelude::SessionContext;

use crate::error::{DeltaError, Result};

/// A parsed `replace_where`.
#[derive(Debug, Clone)]
pub(crate) struct Predicate {
    /// As written.
    pub sql: String,
    expr: Arc<dyn PhysicalExpr>,
    /// Columns it reads.
    pub columns: HashSet<String>,
}

impl Predicate {
    /// Parse `sql` against `schema`: an error names the predicate and what is wrong.
    pub(crate) fn parse(sql: &str, schema: &SchemaRef) -> Result<Self> {
        let invalid = |e: &dyn std::fmt::Display| {
            DeltaError::Config(format!(
                "replace_where = \"{sql}\" is not a valid predicate: {e}"
            ))
        };
        let ctx = SessionContext::new();
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| invalid(&e))?;
        let expr = ctx
            .parse_sql_expr(sql, &df_schema)
            .map_err(|e| invalid(&e))?;
        let columns = expr
            .column_refs()
            .into_iter()
            .map(|c| c.name.clone())
            .collect();
        let physical = ctx
            .create_physical_expr(expr, &df_schema)
            .map_err(|e| invalid(&e))?;
        let output = physical
            .data_type(schema.as_ref())
            .map_err(|e| invalid(&e))?;
        if output != DataType::Boolean {
            return Err(invalid(&format!("it is of type {output}, not boolean")));
        }
        Ok(Self {
            sql: sql.to_string(),
            expr: physical,
            columns,
        })
    }

    /// Whether each row of `batch` (of the schema it was parsed with) matches; NULL counts
    /// as not matching.
    pub(crate) fn eval(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let value = self
            .expr
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| {
                DeltaError::Config(format!("evaluating replace_where = \"{}\": {e}", self.sql))
            })?;
        let bools = value.as_boolean();
        Ok(bools.iter().map(|v| Some(v.unwrap_or(false))).collect())
    }

    /// Check that every row of an incoming batch matches: a row outside the predicate would
    /// land outside the part of the table the run replaces.
    pub(crate) fn check_incoming(&self, batch: &RecordBatch, offset: u64) -> Result<()> {
        let matches = self.eval(batch)?;
        if let Some(i) = (0..matches.len()).find(|&i| !matches.value(i)) {
            return Err(DeltaError::Config(format!(
                "row {} of the run does not match replace_where = \"{}\": a replace with a \
                 predicate may only write rows inside it; nothing was committed",
                offset + i as u64 + 1,
                self.sql
            )));
        }
        Ok(())
    }

    /// Whether it reads only `partition_columns` (then whole files are in or out).
    pub(crate) fn on_partitions_only(&self, partition_columns: &[String]) -> bool {
        self.columns.iter().all(|c| partition_columns.contains(c))
    }
}
