//! `pipe serve catalog` with pyiceberg as the other client: shared tables both ways, the
//! spec's answers (401, 400, 404, 409) and endpoints, and writers through the server and
//! straight to its SQL catalog at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use common::catalog::{Flavour, TOKEN, http, pipeline};
use common::iceberg::{id_names, py_write_in, read_in};
use common::{Project, py_in};
use serde_json::json;

#[test]
fn pyiceberg_and_pipe_share_tables_through_pipe_serve_catalog() {
    let p = Project::new();
    let (cat, reader) = p.rest(Flavour::Pipe, |c| (c.toml(), c.reader()));
    // pyiceberg creates a namespace and a table and appends; pipe merges into it
    let rows = json!([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]);
    py_write_in(&p, &reader, "py.made", "append", &rows, &[]);
    p.write("in.csv", "id,name\n2,b2\n3,c\n");
    let m = pipeline(&p, "m", &cat, "py.made", "merge");
    let out = p.pipe(&["run", &m, "--json"]).assert_ok().json();
    assert_eq!(out["commit"]["rows_updated"], 1, "{out}");
    assert_eq!(out["commit"]["rows_inserted"], 1, "{out}");
    let table = read_in(&p, &reader, "py.made");
    assert_eq!(
        id_names(&table),
        [(1, "a".into()), (2, "b2".into()), (3, "c".into())]
    );
    // pipe creates a table (through a staged create for its location); pyiceberg reads it
    // exactly, then upserts into it; pipe appends on top
    p.write("in.csv", "id,name\n10,x\n11,y\n");
    let a = pipeline(&p, "a", &cat, "ns.pipe_made", "append");
    p.pipe(&["run", &a]).assert_ok();
    let table = read_in(&p, &reader, "ns.pipe_made");
    assert_eq!(id_names(&table), [(10, "x".into()), (11, "y".into())]);
    let snapshot = &table["snapshots"][0];
    assert_eq!(snapshot["summary"]["pipe.pipeline"], "a", "{table}");
    let upsert = json!([{"id": 11, "name": "y2"}, {"id": 12, "name": "z"}]);
    py_write_in(&p, &reader, "ns.pipe_made", "upsert", &upsert, &[]);
    p.write("in.csv", "id,name\n13,w\n");
    p.pipe(&["run", &a]).assert_ok();
    let table = read_in(&p, &reader, "ns.pipe_made");
    assert_eq!(
        id_names(&table),
        [
            (10, "x".into()),
            (11, "y2".into()),
            (12, "z".into()),
            (13, "w".into())
        ]
    );
    // the same tables, straight from the SQL catalog the server keeps (same layout)
    let direct = read_in(&p, "cat/catalog.db", "ns.pipe_made");
    assert_eq!(direct["checksum"], table["checksum"]);
}

#[test]
fn the_catalog_server_answers_as_the_spec_says() {
    let p = Project::new();
    let (uri, reader, cat) = p.rest(Flavour::Pipe, |c| (c.uri(), c.reader(), c.toml()));
    // no token: 401 in the spec's error form
    let v = http(&p, &["GET", &format!("{uri}/v1/namespaces")]);
    assert_eq!(v["status"], 401, "{v}");
    assert_eq!(v["body"]["error"]["type"], "NotAuthorizedException", "{v}");
    assert_eq!(v["body"]["error"]["code"], 401, "{v}");
    // a wrong token too
    let v = http(
        &p,
        &["GET", &format!("{uri}/v1/config"), "--token", "not-it"],
    );
    assert_eq!(v["status"], 401, "{v}");
    // malformed JSON: 400 with the spec's body
    let v = http(
        &p,
        &[
            "POST",
            &format!("{uri}/v1/namespaces"),
            "--body",
            "{\"namespace\": [",
            "--token",
            TOKEN,
        ],
    );
    assert_eq!(v["status"], 400, "{v}");
    assert_eq!(v["body"]["error"]["type"], "BadRequestException", "{v}");
    // namespaces: create, list (top level and under a parent), load, properties, drop
    let create = |ns: &str| {
        http(
            &p,
            &[
                "POST",
                &format!("{uri}/v1/namespaces"),
                "--body",
                &json!({"namespace": ns.split('.').collect::<Vec<_>>(), "properties": {"owner": "t"}})
                    .to_string(),
                "--token",
                TOKEN,
            ],
        )
    };
    assert_eq!(create("a")["status"], 200);
    assert_eq!(create("a.b")["status"], 200);
    assert_eq!(create("a")["status"], 409, "a second create is a conflict");
    let v = http(
        &p,
        &["GET", &format!("{uri}/v1/namespaces"), "--token", TOKEN],
    );
    assert_eq!(v["body"]["namespaces"], json!([["a"]]), "{v}");
    let v = http(
        &p,
        &[
            "GET",
            &format!("{uri}/v1/namespaces?parent=a"),
            "--token",
            TOKEN,
        ],
    );
    assert_eq!(v["body"]["namespaces"], json!([["a", "b"]]), "{v}");
    let v = http(
        &p,
        &[
            "POST",
            &format!("{uri}/v1/namespaces/a/properties"),
            "--body",
            r#"{"removals": ["owner", "nope"], "updates": {"k": "v"}}"#,
            "--token",
            TOKEN,
        ],
    );
    assert_eq!(v["body"]["removed"], json!(["owner"]), "{v}");
    assert_eq!(v["body"]["missing"], json!(["nope"]), "{v}");
    let v = http(
        &p,
        &["GET", &format!("{uri}/v1/namespaces/a"), "--token", TOKEN],
    );
    // (iceberg-catalog-sql marks every namespace with `exists`)
    assert_eq!(v["body"]["properties"]["k"], "v", "{v}");
    assert!(v["body"]["properties"].get("owner").is_none(), "{v}");
    let v = http(
        &p,
        &[
            "GET",
            &format!("{uri}/v1/namespaces/nope/tables/t"),
            "--token",
            TOKEN,
        ],
    );
    assert_eq!(v["status"], 404, "{v}");
    assert_eq!(v["body"]["error"]["type"], "NoSuchTableException", "{v}");
    // a stale commit: 409, and pipe's own retry after losing a race succeeds
    p.write("in.csv", "id,name\n1,a\n");
    let f = pipeline(&p, "s", &cat, "ns.s", "append");
    p.pipe(&["run", &f]).assert_ok();
    let (ok, v) = py_in(p.path(), "rest.py", &["stale", &reader, "ns.s"]);
    assert!(ok, "{v}");
    assert_eq!(v["stale"], "CommitFailedException", "{v}");
    // rename; HEAD and list; drop without purge, register its metadata file again; purge
    let call = |method: &str, path: &str, body: Option<&str>| {
        let url = format!("{uri}/v1{path}");
        let mut args = vec![method, url.as_str(), "--token", TOKEN];
        if let Some(b) = body {
            args.extend(["--body", b]);
        }
        http(&p, &args)
    };
    let v = call(
        "POST",
        "/tables/rename",
        Some(
            r#"{"source": {"namespace": ["ns"], "name": "s"}, "destination": {"namespace": ["a"], "name": "s2"}}"#,
        ),
    );
    assert_eq!(v["status"], 204, "{v}");
    assert_eq!(call("HEAD", "/namespaces/a/tables/s2", None)["status"], 204);
    assert_eq!(call("HEAD", "/namespaces/ns/tables/s", None)["status"], 404);
    let v = call("GET", "/namespaces/a/tables", None);
    assert_eq!(
        v["body"]["identifiers"],
        json!([{"namespace": ["a"], "name": "s2"}]),
        "{v}"
    );
    let table = read_in(&p, &reader, "a.s2");
    assert_eq!(table["count"], 1);
    let data_file = table["files"][0].as_str().unwrap().to_string();
    let data_file = std::path::Path::new(data_file.trim_start_matches("file://")).to_path_buf();
    let loaded = call("GET", "/namespaces/a/tables/s2", None);
    let metadata = loaded["body"]["metadata-location"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        call("DELETE", "/namespaces/a/tables/s2", None)["status"],
        204
    );
    assert!(data_file.exists(), "a drop without purge keeps the files");
    let v = call(
        "POST",
        "/namespaces/a/register",
        Some(&json!({"name": "s3", "metadata-location": metadata}).to_string()),
    );
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(read_in(&p, &reader, "a.s3")["checksum"], table["checksum"]);
    let v = call(
        "DELETE",
        "/namespaces/a/tables/s3?purgeRequested=true",
        None,
    );
    assert_eq!(v["status"], 204, "{v}");
    assert!(!data_file.exists(), "purge removes the data files");
    let v = http(
        &p,
        &[
            "DELETE",
            &format!("{uri}/v1/namespaces/a"),
            "--token",
            TOKEN,
        ],
    );
    assert_eq!(
        v["status"], 409,
        "a namespace with a child is not empty: {v}"
    );
}

/// Two writers through the server and two straight to the SQL catalog database behind it,
/// five commits each at once: the same compare-and-swap serializes them all.
#[test]
fn four_writers_making_five_commits_each_leave_one_linear_history() {
    let p = Project::new();
    let (rest, reader) = p.rest(Flavour::Pipe, |c| (c.toml(), c.reader()));
    let sql = "{ type = \"sql\", uri = \"sqlite://cat/catalog.db\", warehouse = \"wh\" }";
    p.write("in.csv", "id,name\n0,seed\n");
    let seed = pipeline(&p, "seed", &rest, "ns.busy", "append");
    p.pipe(&["run", &seed]).assert_ok();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let dir = format!("w{w}");
            let file = format!("{dir}/p.toml");
            let cat = if w < 2 { rest.as_str() } else { sql };
            p.write(&format!("{dir}/in.csv"), "");
            p.write(
                &file,
                &format!(
                    "name = \"writer{w}\"\n[source]\ntype = \"file\"\npath = \"{dir}/in.csv\"\n\
                     column_types = {{ id = \"int64\" }}\n[destination]\ntype = \"iceberg\"\n\
                     catalog = {cat}\ntable = \"ns.busy\"\nmode = \"append\"\ncommit_retries = 50\n"
                ),
            );
            let root = p.path().to_path_buf();
            let bin = env!("CARGO_BIN_EXE_pipe");
            std::thread::spawn(move || {
                for c in 0..5 {
                    let id = 1000 * (w + 1) + c;
                    std::fs::write(
                        root.join(format!("w{w}/in.csv")),
                        format!("id,name\n{id},w{w}\n"),
                    )
                    .unwrap();
                    let out = std::process::Command::new(bin)
                        .current_dir(&root)
                        .args(["run", &format!("w{w}/p.toml")])
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "writer {w} commit {c}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a writer failed");
    }
    let table = read_in(&p, &reader, "ns.busy");
    assert_eq!(table["count"], 21, "{}", table["count"]);
    let snapshots = table["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 21);
    // one chain: each snapshot's parent is the one before it
    for pair in snapshots.windows(2) {
        assert_eq!(pair[1]["parent"], pair[0]["id"], "{pair:?}");
    }
    assert_eq!(table["current"], snapshots[20]["id"]);
}

/// SIGTERM stops the server cleanly (exit 0).
#[test]
fn the_server_stops_on_sigterm() {
    let p = Project::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = p.spawn(
        &["serve", "catalog", "--listen", &format!("127.0.0.1:{port}")],
        &[],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let v = http(&p, &["GET", &format!("http://127.0.0.1:{port}/v1/config")]);
    assert_eq!(v["status"], 200, "no token needed without --token: {v}");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{stderr}"
    );
}
