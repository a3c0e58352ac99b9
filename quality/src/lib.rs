//! # pipe-quality
//!
//! The data-quality contract stage: rules declared in the pipeline's `[contract]` section are
//! evaluated on every batch, vectorized, between the metadata and load stages — so no row that
//! breaks the contract reaches the destination, and under `on_violation = "fail"` nothing at
//! all is committed.

mod config;
mod keys;
mod stage;

use pipe_framework::{BuildContext, Result, Stage, StageFactory};

pub use config::{ColumnRules, ContractConfig, OnViolation};
pub use stage::{ContractStage, RuleReport};

/// Registers the `[contract]` section.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContractFactory;

impl StageFactory for ContractFactory {
    type Config = ContractConfig;

    fn description(&self) -> &'static str {
        "data-quality contract: required, unique, primary_key; fail, drop or warn"
    }

    fn build(&self, config: ContractConfig, _ctx: &BuildContext) -> Result<Box<dyn Stage>> {
        Ok(Box::new(ContractStage::new(config)))
    }
}
