//! Schema evolution planning and the batch alignment of the metadata stage.
//!
//! Every destination answers the same questions when a run starts: which source columns are
//! new, which types changed, and is that allowed under the pipeline's policy? [`plan_evolution`]
//! answers them in Arrow terms; the destination turns the plan into its own DDL. The
//! [`Aligner`] then converts every source batch to the table's schema (column order, lossless
//! casts, NULL for table columns the source lacks) so sinks only ever see their own schema.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow_cast::{CastOptions, can_cast_types, cast_with_options};
use arrow_schema::{DataType, FieldRef, Schema, SchemaRef};

use crate::destination::SchemaEvolution;
use crate::error::{Error, Result};

/// One change the table needs before this run's data fits.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaChange {
    /// A source column the table does not have (always nullable: old rows have no value).
    AddColumn(FieldRef),
    /// A table column whose type must widen to hold the source's values losslessly.
    WidenColumn {
        /// The table's column name.
        name: String,
        /// Its current type.
        from: DataType,
        /// The wider type.
        to: DataType,
    },
}

/// The outcome of [`plan_evolution`].
#[derive(Debug, Clone)]
pub struct EvolutionPlan {
    /// The table's schema once `changes` are applied.
    pub target: SchemaRef,
    /// Changes to apply, in order. Empty when the table already fits.
    pub changes: Vec<SchemaChange>,
}

/// How a destination compares types and names.
#[derive(Clone, Copy)]
pub struct TypeRules<'a> {
    /// Whether two Arrow types are stored as the same type by the destination (e.g. `Utf8`
    /// and `Utf8View` both become DuckDB `VARCHAR`).
    pub same_type: &'a dyn Fn(&DataType, &DataType) -> bool,
    /// Whether column names match case-insensitively (DuckDB, most SQL engines).
    pub case_insensitive_names: bool,
}

impl std::fmt::Debug for TypeRules<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeRules")
            .field("case_insensitive_names", &self.case_insensitive_names)
            .finish_non_exhaustive()
    }
}

impl TypeRules<'_> {
    fn find<'s>(&self, schema: &'s Schema, name: &str) -> Option<(usize, &'s FieldRef)> {
        let i = if self.case_insensitive_names {
            crate::columns::find(schema, name)
        } else {
            schema.index_of(name).ok()
        }?;
        Some((i, &schema.fields()[i]))
    }
}

/// Compare the existing table's schema with the source's and decide what must change.
///
/// Rules: a source column missing from the table is added under `evolve`, dropped under
/// `discard_columns` and an error under `freeze`. A type the table stores the same way, or
/// one that converts losslessly into the table's type, is kept; a table type that must widen
/// to hold the source's values is widened under `evolve` and an error otherwise; any other
/// type difference is an error under every policy. A table column missing from the source is
/// filled with NULL, which requires it to be nullable.
pub fn plan_evolution(
    table: &Schema,
    source: &Schema,
    policy: SchemaEvolution,
    rules: TypeRules<'_>,
) -> Result<EvolutionPlan> {
    let mut fields: Vec<FieldRef> = table.fields().iter().cloned().collect();
    let mut changes = Vec::new();
    for src in source.fields() {
        match rules.find(table, src.name()) {
            None => match policy {
                SchemaEvolution::Evolve => {
                    let added: FieldRef = Arc::new(src.as_ref().clone().with_nullable(true));
                    fields.push(added.clone());
                    changes.push(SchemaChange::AddColumn(added));
                }
                SchemaEvolution::DiscardColumns => {}
                SchemaEvolution::Freeze => {
                    return Err(Error::user(format!(
                        "schema_evolution = \"freeze\": the source has column `{}` ({}) that the \
                         table does not have; nothing was written",
                        src.name(),
                        src.data_type()
                    )));
                }
            },
            Some((idx, existing)) => {
                let (from, to) = (src.data_type(), existing.data_type());
                if (rules.same_type)(from, to) || is_lossless_widening(from, to) {
                    continue;
                }
                if is_lossless_widening(to, from) && policy == SchemaEvolution::Evolve {
                    fields[idx] = Arc::new(existing.as_ref().clone().with_data_type(from.clone()));
                    changes.push(SchemaChange::WidenColumn {
                        name: existing.name().clone(),
                        from: to.clone(),
                        to: from.clone(),
                    });
                    continue;
                }
                let hint = if is_lossless_widening(to, from) {
                    format!(
                        "; schema_evolution = \"{}\" does not widen types (\"evolve\" would)",
                        policy_name(policy)
                    )
                } else {
                    String::new()
                };
                return Err(Error::user(format!(
                    "column `{}` has type {} in the table but {} in the source, which does not \
                     convert losslessly{hint}; nothing was written",
                    existing.name(),
                    to,
                    from
                )));
            }
        }
    }
    for field in table.fields() {
        if !field.is_nullable() && rules.find(source, field.name()).is_none() {
            return Err(Error::user(format!(
                "column `{}` is NOT NULL in the table but the source does not have it",
                field.name()
            )));
        }
    }
    Ok(EvolutionPlan {
        target: Arc::new(Schema::new_with_metadata(fields, table.metadata().clone())),
        changes,
    })
}

/// `source` with each column of type `Null` (a CSV of only a header, a column of only NULLs)
/// given the type of the table column it fills, where the table has it: such a column says
/// nothing about types, and must not be mistaken for a type change. Names match exactly,
/// else case-insensitively.
pub fn fill_null_types(source: &Schema, table: &Schema) -> Schema {
    let fields: Vec<FieldRef> = source
        .fields()
        .iter()
        .map(|f| {
            if f.data_type() != &DataType::Null {
                return f.clone();
            }
            let found = crate::columns::find(table, f.name()).map(|i| table.field(i));
            match found {
                Some(t) => Arc::new(f.as_ref().clone().with_data_type(t.data_type().clone())),
                None => f.clone(),
            }
        })
        .collect();
    Schema::new_with_metadata(fields, source.metadata().clone())
}

fn policy_name(policy: SchemaEvolution) -> &'static str {
    match policy {
        SchemaEvolution::Evolve => "evolve",
        SchemaEvolution::Freeze => "freeze",
        SchemaEvolution::DiscardColumns => "discard_columns",
    }
}

/// Whether every value of `from` is exactly representable in `to`.
pub fn is_lossless_widening(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to || matches!(from, Null) {
        return true;
    }
    match (from, to) {
        (Int8, Int16 | Int32 | Int64 | Float32 | Float64) => true,
        (Int16, Int32 | Int64 | Float32 | Float64) => true,
        (Int32, Int64 | Float64) => true,
        (UInt8, UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64 | Float32 | Float64) => true,
        (UInt16, UInt32 | UInt64 | Int32 | Int64 | Float32 | Float64) => true,
        (UInt32, UInt64 | Int64 | Float64) => true,
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        (Int8 | Int16 | Int32 | Int64, Decimal128(p, s)) => {
            let digits = match from {
                Int8 => 3,
                Int16 => 5,
                Int32 => 10,
                _ => 19,
            };
            i32::from(*p) - i32::from(*s) >= digits
        }
        (Decimal128(p1, s1), Decimal128(p2, s2)) => {
            s2 >= s1 && i32::from(*p2) - i32::from(*s2) >= i32::from(*p1) - i32::from(*s1)
        }
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Date32, Date64) | (Date64, Date32) => false,
        _ => false,
    }
}

/// Converts source batches to a target schema: the per-batch work of the metadata stage.
#[derive(Debug, Clone)]
pub struct Aligner {
    target: SchemaRef,
    /// For each target column: the source column feeding it, or `None` for NULLs.
    sources: Vec<Option<usize>>,
    identity: bool,
}

impl Aligner {
    /// Plan the conversion from `source` to `target`. Names match exactly, else
    /// case-insensitively (the target was planned by a destination that may fold case).
    /// Errors if a source type cannot be cast to the target's.
    pub fn new(source: &Schema, target: SchemaRef) -> Result<Self> {
        let mut sources = Vec::with_capacity(target.fields().len());
        for field in target.fields() {
            let found = crate::columns::find(source, field.name())
                .map(|i| (i, source.field(i).data_type()));
            if let Some((_, dt)) = found
                && !can_cast_types(dt, field.data_type())
            {
                return Err(Error::user(format!(
                    "column `{}`: the source's {} cannot be converted to the table's {}",
                    field.name(),
                    dt,
                    field.data_type()
                )));
            }
            sources.push(found.map(|(i, _)| i));
        }
        let identity = source.fields().len() == target.fields().len()
            && sources.iter().enumerate().all(|(i, s)| *s == Some(i))
            && source
                .fields()
                .iter()
                .zip(target.fields())
                .all(|(a, b)| a == b);
        Ok(Self {
            target,
            sources,
            identity,
        })
    }

    /// The schema of every aligned batch.
    pub fn target(&self) -> &SchemaRef {
        &self.target
    }

    /// Convert one batch. Casts are checked: a value that does not fit is an error naming the
    /// column, never a silent NULL.
    pub fn align(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let aligned = self.convert(batch)?;
        check_times_of_day(&aligned)?;
        Ok(aligned)
    }

    fn convert(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.identity {
            return Ok(RecordBatch::try_new(
                self.target.clone(),
                batch.columns().to_vec(),
            )?);
        }
        let rows = batch.num_rows();
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sources.len());
        for (field, source) in self.target.fields().iter().zip(&self.sources) {
            let column = match source {
                None => new_null_array(field.data_type(), rows),
                Some(i) => {
                    let col = batch.column(*i);
                    if col.data_type() == field.data_type() {
                        col.clone()
                    } else {
                        cast_with_options(col, field.data_type(), &options).map_err(|e| {
                            Error::from(e).context(format!(
                                "column `{}`: converting {} to {}",
                                field.name(),
                                col.data_type(),
                                field.data_type()
                            ))
                        })?
                    }
                }
            };
            columns.push(column);
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.target.clone(),
            columns,
            &opts,
        )?)
    }
}

/// Arrow's times of day must lie in `[00:00, 24:00)`; a source can still hand over one that
/// does not (PostgreSQL's `24:00:00`, a foreign Parquet file), which destinations reject deep
/// in their writers without naming the column. Refuse it here, naming column and value.
fn check_times_of_day(batch: &RecordBatch) -> Result<()> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType,
    };
    use arrow_schema::TimeUnit;
    fn first_bad<T: Into<i64> + Copy>(
        values: impl Iterator<Item = Option<T>>,
        per_day: i64,
    ) -> Option<i64> {
        values
            .flatten()
            .map(Into::into)
            .find(|v| !(0..per_day).contains(v))
    }
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let (bad, unit) = match field.data_type() {
            DataType::Time32(TimeUnit::Second) => (
                first_bad(column.as_primitive::<Time32SecondType>().iter(), 86_400),
                "s",
            ),
            DataType::Time32(_) => (
                first_bad(
                    column.as_primitive::<Time32MillisecondType>().iter(),
                    86_400_000,
                ),
                "ms",
            ),
            DataType::Time64(TimeUnit::Microsecond) => (
                first_bad(
                    column.as_primitive::<Time64MicrosecondType>().iter(),
                    86_400_000_000,
                ),
                "µs",
            ),
            DataType::Time64(_) => (
                first_bad(
                    column.as_primitive::<Time64NanosecondType>().iter(),
                    86_400_000_000_000,
                ),
                "ns",
            ),
            _ => continue,
        };
        if let Some(value) = bad {
            return Err(Error::user(format!(
                "column `{}`: the time of day {value} {unit} is outside 00:00:00–23:59:59.999999 \
                 (24:00:00 and later have no Arrow, Parquet or Iceberg equivalent)",
                field.name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int32Array, Int64Array};
    use arrow_schema::Field;

    fn same(a: &DataType, b: &DataType) -> bool {
        a == b
    }

    fn rules() -> TypeRules<'static> {
        TypeRules {
            same_type: &same,
            case_insensitive_names: true,
        }
    }

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn evolve_adds_new_columns_and_widens_types() {
        let table = schema(&[("id", DataType::Int32), ("name", DataType::Utf8)]);
        let source = schema(&[("ID", DataType::Int64), ("amount", DataType::Float64)]);
        let plan = plan_evolution(&table, &source, SchemaEvolution::Evolve, rules()).expect("plan");
        assert_eq!(plan.changes.len(), 2);
        assert_eq!(plan.target.field(0).data_type(), &DataType::Int64);
        assert_eq!(plan.target.field(2).name(), "amount");
    }

    #[test]
    fn freeze_rejects_new_columns_and_widening() {
        let table = schema(&[("id", DataType::Int32)]);
        let new_col = schema(&[("id", DataType::Int32), ("x", DataType::Utf8)]);
        let err =
            plan_evolution(&table, &new_col, SchemaEvolution::Freeze, rules()).expect_err("x");
        assert!(err.message().contains("column `x`"), "{err:?}");
        let wider = schema(&[("id", DataType::Int64)]);
        let err = plan_evolution(&table, &wider, SchemaEvolution::Freeze, rules()).expect_err("w");
        assert!(err.message().contains("does not widen"), "{err:?}");
    }

    #[test]
    fn narrower_source_types_are_cast_without_changing_the_table() {
        let table = schema(&[("id", DataType::Int64)]);
        let source = schema(&[("id", DataType::Int32)]);
        let plan = plan_evolution(&table, &source, SchemaEvolution::Freeze, rules()).expect("ok");
        assert!(plan.changes.is_empty());
        let aligner = Aligner::new(&source, plan.target.clone()).expect("aligner");
        let batch = RecordBatch::try_new(
            Arc::new(source),
            vec![Arc::new(Int32Array::from(vec![Some(1), None]))],
        )
        .expect("batch");
        let out = aligner.align(batch).expect("aligned");
        let col = out
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        assert_eq!(col.value(0), 1);
        assert!(col.is_null(1));
    }

    #[test]
    fn incompatible_types_are_an_error_under_every_policy() {
        let table = schema(&[("id", DataType::Int64)]);
        let source = schema(&[("id", DataType::Utf8)]);
        for policy in [SchemaEvolution::Evolve, SchemaEvolution::Freeze] {
            let err = plan_evolution(&table, &source, policy, rules()).expect_err("mismatch");
            assert!(
                err.message().contains("Int64 in the table but Utf8"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn table_columns_missing_from_the_source_become_nulls() {
        let table = Arc::new(schema(&[("id", DataType::Int64), ("note", DataType::Utf8)]));
        let source = schema(&[("id", DataType::Int64)]);
        let aligner = Aligner::new(&source, table).expect("aligner");
        let batch =
            RecordBatch::try_new(Arc::new(source), vec![Arc::new(Int64Array::from(vec![7]))])
                .expect("batch");
        let out = aligner.align(batch).expect("aligned");
        assert_eq!(out.num_columns(), 2);
        assert_eq!(out.column(1).null_count(), 1);
    }
}
