//! The store against real SQLite files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use super::*;

#[tokio::test]
async fn a_store_written_by_an_older_pipe_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    install_default_drivers();
    let old = sqlx::AnyPool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE pipe_leases (pipeline TEXT PRIMARY KEY, holder TEXT NOT NULL, \
         host TEXT NOT NULL, pid BIGINT NOT NULL, expires_at BIGINT NOT NULL)",
    )
    .execute(&old)
    .await
    .unwrap();
    sqlx::query("INSERT INTO pipe_leases VALUES ('orders', 'h', 'elsewhere', 1, 0)")
        .execute(&old)
        .await
        .unwrap();
    old.close().await;

    let store = StateStore::open_path(&path).await.unwrap();
    // The expired lease of the old schema is taken over; then a second runner is refused.
    let lease = store.lease("orders").await.unwrap();
    let err = store.lease("orders").await.unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");
    lease.release().await.unwrap();
    store
        .lease("orders")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    // Opening again (the column now exists) is a no-op.
    StateStore::open_path(&path).await.unwrap();
}
