//! # pipe-quality
//!
//! Data contracts enforced before the commit: rules declared in a pipeline's `[contract]`
//! section or a contract file are evaluated on every batch, vectorized (Arrow kernels and
//! DataFusion physical expressions), between the metadata and load stages. Rows that break a
//! rule fail the run, go to a quarantine table committed with the run, are dropped, or load
//! with a warning. `pipe check` uses the same code to validate contracts, classify changes
//! between two versions, and run a contract over sample data.

mod build;
mod contract;
mod diff;
mod diff_column;
mod export;
mod expr;
mod freshness;
mod json;
mod keys;
mod rules;
mod spec;
mod stage;
mod types;

use pipe_framework::{BuildContext, Result, Stage, StageFactory};

pub use contract::{Contract, ContractFiles, Disk, RuleDef, RuleKind};
pub use diff::{Change, Severity, diff};
pub use export::json_schema;
pub use spec::{Action, ColumnSpec, ContractSpec, ExpressionSpec, FreshnessSpec, Literal};
pub use stage::{ContractStage, QUARANTINE_COLUMNS, RuleReport};
pub use types::LogicalType;

/// Registers the `[contract]` section.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContractFactory;

impl StageFactory for ContractFactory {
    type Config = ContractSpec;

    fn description(&self) -> &'static str {
        "data contract: types, required, unique, primary_key, min/max, lengths, pattern, \
         allowed, precision, JSON Schema, SQL expressions, row counts, freshness; \
         fail, quarantine, drop or warn"
    }

    fn build(&self, config: ContractSpec, ctx: &BuildContext) -> Result<Box<dyn Stage>> {
        Ok(Box::new(ContractStage::new(Contract::from_section(
            config, ctx,
        )?)))
    }
}
