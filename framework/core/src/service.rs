//! Long-running servers a connector crate provides: `pipe serve <name> [ARGS]...` (the
//! Iceberg crate's REST catalog is `pipe serve catalog`). A service parses its own arguments,
//! so the command line knows no connector.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// A server run by `pipe serve <name>`.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// One line for `pipe list`.
    fn description(&self) -> &'static str;

    /// Parse `args` (what follows `pipe serve <name>`; `args[0]` is the command's name, for
    /// help and errors) and serve until `shutdown` is cancelled (SIGTERM, Ctrl-C), then
    /// finish the requests in flight and return.
    async fn run(&self, args: Vec<String>, shutdown: CancellationToken) -> Result<()>;
}
