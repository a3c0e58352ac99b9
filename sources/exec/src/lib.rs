//! # pipe-source-exec
//!
//! `type = "exec"`: runs a program (any language) and reads an Arrow IPC stream from its
//! standard output: the schema first, then the batches. The run's configuration and the
//! committed state reach the program as JSON on its standard input; an incremental program
//! writes its new state to the file `PIPE_STATE_OUT` names, and pipe commits it with the
//! data. A failure (non-zero exit, crash, malformed stream) carries the tail of the program's
//! standard error; cancellation kills its process group. The protocol is specified in
//! docs/custom-sources.md.

mod config;
mod process;
mod source;

use std::sync::Arc;

use pipe_framework::{BuildContext, Result, Source, SourceFactory};

pub use config::ExecConfig;
pub use source::ExecSource;

/// Registers as `type = "exec"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecFactory;

impl SourceFactory for ExecFactory {
    type Config = ExecConfig;

    fn description(&self) -> &'static str {
        "a program in any language writing an Arrow IPC stream to stdout (state in, state out)"
    }

    fn build(&self, config: ExecConfig, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(ExecSource::new(config, &ctx.pipeline)?))
    }
}
