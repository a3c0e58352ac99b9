//! Ctrl-C and SIGTERM: cancel what runs, and exit at once on a second signal.

use tokio_util::sync::CancellationToken;

/// Cancel `token` on Ctrl-C or SIGTERM; on a second signal, exit at once (status 130). Either
/// way nothing uncommitted lands: the next run reconciles an interrupted commit from the
/// destination's ledger.
pub(crate) fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        if !interrupted().await {
            return;
        }
        tracing::warn!(
            "interrupted: cancelling (nothing is committed unless a commit had already begun); \
             interrupt again to exit now"
        );
        token.cancel();
        if interrupted().await {
            tracing::warn!("interrupted twice: exiting now");
            std::process::exit(130);
        }
    });
}

/// Waits for Ctrl-C or SIGTERM; false if signals cannot be watched.
async fn interrupted() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return false;
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            r = term.recv() => r.is_some(),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}
