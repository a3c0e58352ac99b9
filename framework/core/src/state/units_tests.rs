//! Work units against a real SQLite file and the machine's PostgreSQL (`PIPE_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::collections::BTreeSet;

use super::*;
use crate::context::Window;

fn plan(n: i64) -> Vec<Window> {
    (0..n)
        .map(|i| Window {
            start: (i * 10).to_string(),
            end: (i * 10 + 10).to_string(),
        })
        .collect()
}

async fn postgres(lease_secs: u64) -> (StateStore, String) {
    let url = std::env::var("PIPE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let config = StateConfig {
        url: Some(Secret::new(url)),
        lease_secs,
        ..StateConfig::default()
    };
    let store = StateStore::open(&config).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is needed (`bash tests/pg/setup.sh` starts it): {e:?}")
    });
    (store, format!("units_{}", uuid::Uuid::now_v7().simple()))
}

#[tokio::test]
async fn units_are_registered_once_claimed_in_order_and_finished() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open_path(&dir.path().join("s.db"))
        .await
        .unwrap();
    let committed = State::from([(plan(3)[1].state_key(), "r0".to_string())]);
    let r = store
        .register_units("p", &plan(3), &committed)
        .await
        .unwrap();
    assert_eq!((r.windows, r.already_committed, r.added), (3, 1, 2));
    let again = store
        .register_units("p", &plan(3), &committed)
        .await
        .unwrap();
    assert_eq!((again.added, again.existing), (0, 2));
    // Another step over the same range overlaps registered windows: refused.
    let other: Vec<Window> = vec![Window {
        start: "0".into(),
        end: "5".into(),
    }];
    assert!(
        store
            .register_units("p", &other, &State::new())
            .await
            .is_err()
    );

    let me = WorkerId::this_process();
    let you = WorkerId::this_process();
    let a = store.claim_unit("p", &me).await.unwrap().unwrap();
    // A worker runs one unit at a time: claiming again gets the unit it holds (its first
    // claim's answer was lost).
    assert_eq!(
        store.claim_unit("p", &me).await.unwrap().unwrap().key,
        a.key
    );
    let b = store.claim_unit("p", &you).await.unwrap().unwrap();
    assert_eq!(
        (a.window.start.as_str(), b.window.start.as_str()),
        ("0", "20")
    );
    let third = WorkerId::this_process();
    assert!(store.claim_unit("p", &third).await.unwrap().is_none());
    assert_eq!(store.units_left("p").await.unwrap(), 2);
    assert!(store.renew_unit("p", &a.key, &me).await.unwrap());
    let done = UnitOutcome::Done {
        run_id: "r1".into(),
        rows: 7,
    };
    store.finish_unit("p", &a.key, &me, &done).await.unwrap();
    let failed = UnitOutcome::Failed {
        run_id: None,
        error: "bad row".into(),
    };
    store.finish_unit("p", &b.key, &you, &failed).await.unwrap();
    let s = store.units_status("p").await.unwrap().unwrap();
    assert_eq!((s.total, s.done, s.failed, s.rows), (2, 1, 1, 7));
    assert_eq!(s.failures, vec!["20..30: bad row".to_string()]);
    assert_eq!((s.workers.len(), s.workers[0].units), (1, 1));
    // Registering the plan again retries the failed unit.
    let retry = store
        .register_units("p", &plan(3), &committed)
        .await
        .unwrap();
    assert_eq!(retry.retried, 1);
    let c = store.claim_unit("p", &me).await.unwrap().unwrap();
    assert_eq!((c.key.as_str(), c.attempts), (b.key.as_str(), 1));
    assert!(store.units_status("nobody").await.unwrap().is_none());
}

#[tokio::test]
async fn a_dead_workers_unit_is_claimable_at_once_and_its_lease_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open_path(&dir.path().join("s.db"))
        .await
        .unwrap();
    store
        .register_units("p", &plan(1), &State::new())
        .await
        .unwrap();
    // A worker of this host whose process is gone (pid 0 never names a user process).
    let mut dead = WorkerId::this_process();
    dead.id = "dead".into();
    dead.pid = i64::from(i32::MAX);
    let unit = store.claim_unit("p", &dead).await.unwrap().unwrap();
    let me = WorkerId::this_process();
    let again = store.claim_unit("p", &me).await.unwrap().unwrap();
    assert_eq!(again.key, unit.key);
    assert_eq!(again.attempts, 2);
    assert!(!store.renew_unit("p", &unit.key, &dead).await.unwrap());
    // The dead worker's late failure does not touch the unit the live one holds.
    let failed = UnitOutcome::Failed {
        run_id: None,
        error: "late".into(),
    };
    store
        .finish_unit("p", &unit.key, &dead, &failed)
        .await
        .unwrap();
    assert!(store.renew_unit("p", &unit.key, &me).await.unwrap());
}

#[tokio::test]
async fn concurrent_claims_on_postgres_never_share_a_unit() {
    let (store, pipeline) = postgres(60).await;
    store
        .register_units(&pipeline, &plan(200), &State::new())
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        let pipeline = pipeline.clone();
        tasks.spawn(async move {
            let mut me = WorkerId::this_process();
            me.id = format!("w{i}");
            let mut got = Vec::new();
            while let Some(u) = store.claim_unit(&pipeline, &me).await.unwrap() {
                let done = UnitOutcome::Done {
                    run_id: format!("r{i}"),
                    rows: 1,
                };
                store
                    .finish_unit(&pipeline, &u.key, &me, &done)
                    .await
                    .unwrap();
                got.push(u.key);
            }
            got
        });
    }
    let mut all = Vec::new();
    while let Some(got) = tasks.join_next().await {
        all.extend(got.unwrap());
    }
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (200, 200));
    let s = store.units_status(&pipeline).await.unwrap().unwrap();
    assert_eq!((s.total, s.done, s.rows), (200, 200, 200));
    forget(&store, &pipeline).await;
}

#[tokio::test]
async fn an_expired_lease_on_postgres_is_claimed_by_another_worker() {
    let (store, pipeline) = postgres(1).await;
    store
        .register_units(&pipeline, &plan(1), &State::new())
        .await
        .unwrap();
    // A worker of another host: only its lease's expiry frees the unit.
    let mut far = WorkerId::this_process();
    far.id = "far".into();
    far.host = "elsewhere/00000000".into();
    let unit = store.claim_unit(&pipeline, &far).await.unwrap().unwrap();
    let me = WorkerId::this_process();
    assert!(store.claim_unit(&pipeline, &me).await.unwrap().is_none());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = store.claim_unit(&pipeline, &me).await.unwrap().unwrap();
    assert_eq!(again.key, unit.key);
    let s = store.units_status(&pipeline).await.unwrap().unwrap();
    assert_eq!(s.running_units[0].host, me.host);
    forget(&store, &pipeline).await;
}

async fn forget(store: &StateStore, pipeline: &str) {
    sqlx::query("DELETE FROM pipe_units WHERE pipeline = $1")
        .bind(pipeline)
        .execute(store.pool())
        .await
        .unwrap();
}
