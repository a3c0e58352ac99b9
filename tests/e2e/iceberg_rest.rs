//! pipe's Iceberg REST client: OAuth2 token renewal and a refused credential, a commit whose
//! answer is lost, Nessie-style prefixes and bad settings. (`pipe serve catalog` with
//! pyiceberg is catalog_server.rs; every mode and layout against every REST flavour,
//! lakana-server included, is the conformance suite's.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::catalog::{Flavour, RestCatalog, TOKEN, http, pipeline};
use common::iceberg::{id_names, read_in};
use common::{PgObjects, Project, pg_url, psql, unique};

#[test]
fn oauth2_tokens_are_renewed_and_a_wrong_credential_is_one_clear_error() {
    let p = Project::new();
    let secret = "s3cr3t-never-printed";
    let mut server = RestCatalog::start_with(
        &p,
        Flavour::Pipe,
        &[
            "--client",
            &format!("etl:{secret}"),
            "--token-ttl-secs",
            "2",
        ],
    );
    let uri = server.uri();
    let cat = |credential: &str| {
        format!(
            "{{ type = \"rest\", uri = \"{uri}\", credential = \"{credential}\", create_namespace = true }}"
        )
    };
    // A run longer than a token's life: its source is a FIFO written 4 s after the start.
    p.mkfifo("in.csv");
    let f = "o.toml";
    p.write(
        f,
        &format!(
            "name = \"o\"\n[source]\ntype = \"file\"\npath = \"in.csv\"\n\
             columns = [{{ name = \"id\", type = \"int64\" }}, {{ name = \"name\", type = \"string\" }}]\n\
             [destination]\ntype = \"iceberg\"\ncatalog = {}\ntable = \"ns.o\"\nmode = \"append\"\n",
            cat(&format!("etl:{secret}"))
        ),
    );
    let mut run = p.spawn(&["run", f, "-vv"], &[]);
    std::thread::sleep(Duration::from_secs(4));
    // (a run that ended early would leave the FIFO without a reader, and this write hanging)
    if run.try_wait().unwrap().is_some() {
        let out = run.wait_with_output().unwrap();
        panic!(
            "the run ended early: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(p.path().join("in.csv"), "id,name\n1,a\n").unwrap();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains(secret),
        "the secret was printed:\n{stderr}"
    );
    // (more than one token was fetched)
    let fetched = stderr.matches("fetched an OAuth2 token").count();
    assert!(
        fetched >= 2,
        "the token was not renewed ({fetched} fetched):\n{stderr}"
    );
    // a wrong credential: one clear error, the secret nowhere
    std::fs::remove_file(p.path().join("in.csv")).unwrap();
    p.write("in.csv", "id,name\n2,b\n");
    let wrong = "etl:wrong-secret-value";
    let f = pipeline(&p, "w", &cat(wrong), "ns.o", "append");
    let r = p.pipe(&["run", &f, "-vv", "--json"]).assert_failed();
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("refused the `credential`"), "{all}");
    assert!(
        !all.contains("wrong-secret-value"),
        "the secret was printed:\n{all}"
    );
    server.kill();
    assert!(!server.log().contains(secret));
}

#[test]
fn a_commit_whose_answer_is_lost_is_unknown_and_the_rerun_adds_nothing() {
    let mut pg = PgObjects::new();
    let src = unique("rest_src");
    pg.create(
        &format!(
            "CREATE TABLE {src} (id bigint primary key, name text); \
             INSERT INTO {src} SELECT g, 'n' || g FROM generate_series(1, 100) g"
        ),
        &format!("DROP TABLE IF EXISTS {src}"),
    );
    let p = Project::new();
    let mut server = RestCatalog::start_with(&p, Flavour::PipePostgres, &[]);
    let write = |p: &Project, server: &RestCatalog| {
        p.write(
            "u.toml",
            &format!(
                "name = \"u\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"{src}\"\n\
                 cursor = \"id\"\n[destination]\ntype = \"iceberg\"\ncatalog = {}\n\
                 table = \"ns.u\"\nmode = \"append\"\n",
                pg_url(),
                server.toml()
            ),
        );
    };
    write(&p, &server);
    p.pipe(&["run", "u.toml"]).assert_ok();
    psql(&format!(
        "INSERT INTO {src} SELECT g, 'n' || g FROM generate_series(101, 150) g"
    ));
    // Hold the table's catalog row: the server's pointer swap waits on it.
    let catalog_name = server.pg_name().to_string();
    let mut lock = std::process::Command::new("psql")
        .args([pg_url().as_str(), "-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = lock.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "BEGIN; SELECT 1 FROM iceberg_tables WHERE catalog_name = '{catalog_name}' FOR UPDATE;"
        )
        .unwrap();
        stdin.flush().unwrap();
    }
    let waiting = |state: &str, query: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE {state} AND query LIKE '{query}%'"
        )) != "1"
        {
            assert!(Instant::now() < deadline, "never: {state} {query}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    waiting(
        "state = 'idle in transaction'",
        "SELECT 1 FROM iceberg_tables",
    );
    let run = p.spawn(&["run", "u.toml", "--json"], &[]);
    waiting("wait_event_type = 'Lock'", "UPDATE iceberg_tables");
    // The server dies with the swap pending; the swap itself lands once the row is free.
    server.kill();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit 3 is 'commit unknown':\n{stderr}"
    );
    assert!(stderr.contains("may or may not have happened"), "{stderr}");
    {
        use std::io::Write;
        let stdin = lock.stdin.as_mut().unwrap();
        writeln!(stdin, "COMMIT;").unwrap();
    }
    drop(lock.stdin.take());
    lock.wait().unwrap();
    // (the orphaned swap runs once the row is free)
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND query LIKE 'UPDATE iceberg_tables%'",
    ) != "0"
    {
        assert!(Instant::now() < deadline, "the swap still waits");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The server restarts; the rerun learns from the table that its run landed.
    server.restart(&p);
    write(&p, &server);
    let v = p.pipe(&["run", "u.toml", "--json"]).assert_ok().json();
    let table = read_in(&p, &server.reader(), "ns.u");
    // The swap landed after the server died: the run's files were kept and are read now,
    // and the rerun, told by the table's snapshot summary, adds nothing.
    assert_eq!(v["commit"]["rows_inserted"].as_u64().unwrap_or(0), 0, "{v}");
    assert_eq!(table["snapshots"].as_array().unwrap().len(), 2, "{table}");
    assert_eq!(table["count"], 150, "every row once");
    let ids: Vec<i64> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=150).collect::<Vec<_>>());
}

#[test]
fn nessie_flavour_commits_under_its_branch_prefix() {
    let p = Project::new();
    let server = RestCatalog::start_with(&p, Flavour::Pipe, &["--prefix", "main"]);
    let nessie = |branch: &str| {
        format!(
            "{{ type = \"nessie\", uri = \"{}\", branch = \"{branch}\", token = \"{TOKEN}\", \
             create_namespace = true }}",
            server.uri()
        )
    };
    p.write("in.csv", "id,name\n1,a\n");
    let f = pipeline(&p, "n", &nessie("main"), "ns.n", "append");
    p.pipe(&["run", &f]).assert_ok();
    let table = read_in(&p, &server.reader(), "ns.n");
    assert_eq!(id_names(&table), [(1, "a".into())]);
    let f = pipeline(&p, "d", &nessie("dev"), "ns.n", "append");
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("looking up Nessie branch `dev`")
        .stderr_has("does not exist in this Nessie");
}

#[test]
fn bad_rest_settings_are_clear_errors_and_commit_nothing() {
    let p = Project::new();
    let server = RestCatalog::start(&p, Flavour::Pipe);
    let uri = server.uri();
    p.write("in.csv", "id,name\n1,a\n");
    let case = |name: &str, catalog: String, table: &str, expect: &[&str]| {
        let f = pipeline(&p, name, &catalog, table, "append");
        let r = p.pipe(&["run", &f]).assert_failed();
        for e in expect {
            r.stderr_has(e);
        }
    };
    // unreachable
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    case(
        "unreachable",
        format!("{{ type = \"rest\", uri = \"http://{dead}\", timeout_secs = 5 }}"),
        "ns.t",
        &["calling the REST catalog", "onnect"],
    );
    // wrong token
    case(
        "token",
        format!("{{ type = \"rest\", uri = \"{uri}\", token = \"wrong\" }}"),
        "ns.t",
        &["HTTP 401", "valid `token` or `credential`"],
    );
    // a namespace that does not exist (and may not be created)
    case(
        "ns",
        format!("{{ type = \"rest\", uri = \"{uri}\", token = \"{TOKEN}\" }}"),
        "missing.t",
        &[
            "namespace `missing` does not exist",
            "create_namespace = true",
        ],
    );
    // an unknown prefix
    case(
        "prefix",
        format!("{{ type = \"rest\", uri = \"{uri}\", token = \"{TOKEN}\", prefix = \"nope\" }}"),
        "ns.t",
        &["prefix `nope`", "HTTP 404"],
    );
    // a table whose metadata file is gone
    let cat = server.toml();
    let ok = pipeline(&p, "ok", &cat, "ns.gone", "append");
    p.pipe(&["run", &ok]).assert_ok();
    for entry in walk(&p.path().join("wh/ns/gone/metadata")) {
        if entry.extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(entry).unwrap();
        }
    }
    case(
        "gone",
        cat,
        "ns.gone",
        &[
            "loading table ns.gone",
            "Failed to read file",
            ".metadata.json",
        ],
    );
    let v = http(
        &p,
        &[
            "GET",
            &format!("{uri}/v1/namespaces/missing"),
            "--token",
            TOKEN,
        ],
    );
    assert_eq!(v["status"], 404, "nothing was created: {v}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}
