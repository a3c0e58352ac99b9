//! The HTTP source through the framework's source conformance check, against an in-process
//! axum server on loopback: every record of every page, and a cancelled read that stops.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use pipe_framework::conformance::check_source;
use pipe_framework::{RunContext, Source};
use pipe_source_http::{HttpConfig, HttpSource};

const PAGES: u64 = 20;
const PER_PAGE: u64 = 500;

async fn page(Query(q): Query<HashMap<String, String>>) -> String {
    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let records: Vec<String> = if page > PAGES {
        Vec::new()
    } else {
        ((page - 1) * PER_PAGE..page * PER_PAGE)
            .map(|i| {
                format!(
                    r#"{{"id": {i}, "name": "n\"{i}", "tags": ["a", "b"], "at": {{"x": {}.5}}}}"#,
                    i % 10
                )
            })
            .collect()
    };
    format!(r#"{{"data": [{}], "page": {page}}}"#, records.join(","))
}

async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/items", get(page)))
            .await
            .unwrap();
    });
    format!("http://{addr}/items")
}

fn source(url: &str) -> Arc<dyn Source> {
    let config: HttpConfig = toml::from_str(&format!(
        "url = \"{url}\"\nrecords_path = \"data\"\nbatch_rows = 3000\n\
         pagination = {{ type = \"page_number\" }}"
    ))
    .unwrap();
    Arc::new(HttpSource::new(config).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn paged_records_conform() {
    let url = serve().await;
    let seen = check_source(
        source(&url),
        || RunContext::new("test"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(seen.rows, PAGES * PER_PAGE);
    // Pages of 500 are coalesced into batches of 3000.
    assert_eq!(seen.batches, (PAGES * PER_PAGE).div_ceil(3000));
    assert_eq!(seen.report.parts, PAGES + 1, "20 pages and the empty one");
    let names: Vec<_> = seen
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "name", "tags", "at"]);
}
