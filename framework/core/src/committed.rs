//! The state a commit stores, decided against what the table holds at commit time.
//!
//! A run reads the pipeline's committed state when it starts ([`RunContext::committed`]) and
//! commits its changes (a cursor's new position, a finished backfill window) with its data.
//! Between the two, another run of the same pipeline may have committed: one on another host
//! with its own state store, a run resumed after its lease expired, or a sibling window of a
//! parallel backfill. Every destination that stores state calls [`state_to_commit`] with the
//! state the table holds *now*, on every commit attempt, so such a commit is never lost or
//! doubled:
//!
//! - nobody else committed since this run started: the table's state plus this run's changes;
//! - a backfill window, and the other run did not commit this window: the windows hold
//!   disjoint rows, so the states merge per key (each window's record is kept);
//! - anything else (an incremental run whose cursor moved under it, a window committed twice):
//!   a conflict, nothing is committed. A moved cursor is retryable: the next attempt reads
//!   the new state and loads only what is left.

use crate::context::{RunContext, State};
use crate::error::{Error, Result};
use crate::runtime::LAST_RUN_KEY;

/// The whole state to store with this run's commit, given `current` (the pipeline's state in
/// the table now) and `changes` (this run's, [`crate::CommitRequest::state`]); or why the
/// commit must not happen.
pub fn state_to_commit(ctx: &RunContext, current: &State, changes: &State) -> Result<State> {
    // A window the table holds is never committed again, whatever this run saw at its start
    // (a worker can claim a unit whose earlier worker committed it and died before recording).
    if let Some(window) = &ctx.window
        && let Some(by) = current.get(&window.state_key())
    {
        return Err(Error::user(format!(
            "backfill window {}..{} of pipeline `{}` was committed by run {by} while this run \
             loaded it; nothing was committed",
            window.start, window.end, ctx.pipeline
        )));
    }
    let last_seen = ctx.committed.get(LAST_RUN_KEY);
    let last_now = current.get(LAST_RUN_KEY);
    if last_seen != last_now && ctx.window.is_none() {
        let other = last_now.map_or("another run", String::as_str);
        return Err(Error::external(format!(
            "another run of pipeline `{}` (run {other}) committed after this run read its \
             state, so this run's position may be stale; nothing was committed (a retry starts \
             from the new state)",
            ctx.pipeline
        ))
        .retryable());
    }
    let mut state = current.clone();
    state.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(state)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::context::Window;

    fn state(pairs: &[(&str, &str)]) -> State {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ctx(committed: State, window: Option<Window>) -> RunContext {
        let mut ctx = RunContext::new("p");
        ctx.committed = Arc::new(committed);
        ctx.window = window;
        ctx
    }

    #[test]
    fn nothing_committed_since_the_start_applies_the_changes() {
        let start = state(&[(LAST_RUN_KEY, "r1"), ("cursor.x", "5")]);
        let c = ctx(start.clone(), None);
        let out = state_to_commit(
            &c,
            &start,
            &state(&[("cursor.x", "9"), (LAST_RUN_KEY, "r2")]),
        )
        .expect("no conflict");
        assert_eq!(out, state(&[(LAST_RUN_KEY, "r2"), ("cursor.x", "9")]));
    }

    #[test]
    fn a_cursor_moved_by_another_run_is_a_retryable_conflict() {
        let c = ctx(state(&[(LAST_RUN_KEY, "r1")]), None);
        let now = state(&[(LAST_RUN_KEY, "r9"), ("cursor.x", "7")]);
        let err = state_to_commit(&c, &now, &State::new()).expect_err("conflict");
        assert!(err.is_retryable(), "{err:?}");
        assert!(err.message().contains("run r9"), "{err:?}");
    }

    #[test]
    fn sibling_windows_merge_and_a_window_is_never_committed_twice() {
        let w = |a: &str, b: &str| Window {
            start: a.into(),
            end: b.into(),
        };
        let c = ctx(State::new(), Some(w("0", "10")));
        let now = state(&[(LAST_RUN_KEY, "r2"), ("backfill.10..20", "r2")]);
        let mine = state(&[("backfill.0..10", "r1"), (LAST_RUN_KEY, "r1")]);
        let out = state_to_commit(&c, &now, &mine).expect("disjoint windows merge");
        assert_eq!(out.get("backfill.10..20").map(String::as_str), Some("r2"));
        assert_eq!(out.get("backfill.0..10").map(String::as_str), Some("r1"));
        let done = state(&[(LAST_RUN_KEY, "r3"), ("backfill.0..10", "r3")]);
        assert!(state_to_commit(&c, &done, &mine).is_err());
        // Also when this run saw the window committed at its start (a reclaimed work unit).
        let seen = ctx(done.clone(), Some(w("0", "10")));
        assert!(state_to_commit(&seen, &done, &mine).is_err());
    }
}
