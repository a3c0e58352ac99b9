//! The HTTP source against a real local API (tests/http/server.py, loopback only): every
//! pagination and auth style loaded into DuckDB and read back by python duckdb; retries,
//! rate limits, malformed pages, drift, incremental runs, backfill windows, and secrets that
//! never show.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use common::server::Server;
use common::{Project, python, query, root};

/// Records the server starts with (10 per page: 10 pages, the last one short).
const RECORDS: i64 = 95;

fn api(records: i64) -> Server {
    let script = root().join("tests/http/server.py");
    Server::start(&python(), |port| {
        vec![
            script.display().to_string(),
            port.to_string(),
            "--records".into(),
            records.to_string(),
        ]
    })
}

/// A CA and a certificate for 127.0.0.1 it signed (openssl), in `dir`: (ca.pem, cert, key).
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext file");
    let (ca_key, ca, key, csr, cert, ext) = (
        path("ca.key"),
        path("ca.pem"),
        path("srv.key"),
        path("srv.csr"),
        path("srv.pem"),
        path("leaf.ext"),
    );
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            "/CN=pipe test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect(
                "openssl runs (the TLS test makes its own CA; install openssl if it is missing)",
            );
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (ca, cert, key)
}

fn base(server: &Server) -> String {
    format!("http://127.0.0.1:{}", server.port)
}

/// A pipeline loading `source` (the `[source]` table's body) into `http.duckdb` `table`.
fn pipeline(p: &Project, name: &str, source: &str, table: &str, mode: &str) -> String {
    let file = format!("{name}.toml");
    p.write(
        &file,
        &format!(
            "name = \"{name}\"\n\n[source]\ntype = \"http\"\n{source}\n\n[destination]\n\
             type = \"duckdb\"\npath = \"http.duckdb\"\ntable = \"{table}\"\nmode = \"{mode}\"\n"
        ),
    );
    file
}

/// (count, sum of ids, distinct ids) of `table`.
fn totals(p: &Project, table: &str) -> (i64, i64, i64) {
    let rows = query(
        &p.path().join("http.duckdb"),
        &format!("SELECT count(*), sum(id), count(DISTINCT id) FROM {table}"),
    );
    let n = |i: usize| {
        rows[0][i]
            .as_deref()
            .unwrap_or("0")
            .parse::<i64>()
            .expect("a number")
    };
    (n(0), n(1), n(2))
}

fn expect_all(p: &Project, table: &str, records: i64) {
    assert_eq!(
        totals(p, table),
        (records, records * (records + 1) / 2, records),
        "{table}: every record exactly once"
    );
}

fn table_exists(p: &Project, table: &str) -> bool {
    if !p.path().join("http.duckdb").exists() {
        return false;
    }
    let (schema, name) = table.split_once('.').expect("schema.table");
    let rows = query(
        &p.path().join("http.duckdb"),
        &format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}' \
             AND table_name = '{name}'"
        ),
    );
    rows[0][0].as_deref() == Some("1")
}

const PAGE: &str =
    "pagination = { type = \"page_number\", page_size_param = \"per_page\", page_size = 10 }";

#[test]
fn every_pagination_style_loads_every_record_exactly() {
    let server = api(RECORDS);
    let b = base(&server);
    let p = Project::new();
    let styles = [
        (
            "page",
            format!("url = \"{b}/page\"\nrecords_path = \"data\"\n{PAGE}"),
        ),
        (
            "page_parallel",
            format!(
                "url = \"{b}/page\"\nrecords_path = \"/data\"\nparallelism = 4\n\
                 pagination = {{ type = \"page_number\", page_size_param = \"per_page\", \
                 page_size = 10, total_pages_path = \"/total_pages\" }}"
            ),
        ),
        (
            "offset",
            format!(
                "url = \"{b}/offset\"\nrecords_path = \"/items\"\n\
                 pagination = {{ type = \"offset\", limit = 10 }}"
            ),
        ),
        (
            "offset_parallel",
            format!(
                "url = \"{b}/offset\"\nrecords_path = \"items\"\nparallelism = 3\n\
                 pagination = {{ type = \"offset\", limit = 10, total_path = \"total\" }}"
            ),
        ),
        (
            "cursor",
            format!(
                "url = \"{b}/cursor\"\nparams = {{ per_page = \"10\" }}\nrecords_path = \"results\"\n\
                 pagination = {{ type = \"cursor\", cursor_path = \"/meta/next\", cursor_param = \"after\" }}"
            ),
        ),
        (
            "link",
            format!(
                "url = \"{b}/link\"\nparams = {{ per_page = \"10\" }}\npagination = {{ type = \"link_header\" }}"
            ),
        ),
        (
            "next_url",
            format!(
                "url = \"{b}/next?per_page=10\"\nrecords_path = \"records\"\n\
                 pagination = {{ type = \"next_url\", next_url_path = \"links.next\" }}"
            ),
        ),
        (
            "ndjson",
            format!(
                "url = \"{b}/ndjson\"\nparams = {{ per_page = \"10\" }}\nformat = \"ndjson\"\n\
                 pagination = {{ type = \"link_header\" }}"
            ),
        ),
        (
            "post",
            format!(
                "url = \"{b}/search\"\nmethod = \"post\"\nbody = {{ per_page = 10 }}\n\
                 records_path = \"data\"\npagination = {{ type = \"page_number\" }}"
            ),
        ),
    ];
    for (style, source) in &styles {
        let file = pipeline(&p, style, source, &format!("api.{style}"), "append");
        p.pipe(&["run", &file]).assert_ok();
        expect_all(&p, &format!("api.{style}"), RECORDS);
    }
    // The values themselves, read back by python duckdb: empty string vs NULL, a line
    // break, unicode, nested struct and list, floats.
    let rows = query(
        &p.path().join("http.duckdb"),
        "SELECT id, name, note, addr.city, len(tags), price, qty, updated_at FROM api.page \
         WHERE id IN (3, 4, 5, 8) ORDER BY id",
    );
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        vec![
            vec![
                s("3"),
                s("ünïcödé ✓"),
                None,
                s("c3"),
                s("0"),
                s("3.75"),
                s("3"),
                s("2024-01-01T00:00:01Z")
            ],
            vec![
                s("4"),
                s(""),
                s("n4"),
                s("c4"),
                s("1"),
                s("5.0"),
                s("4"),
                s("2024-01-01T00:00:01Z")
            ],
            vec![
                s("5"),
                s("line\nbreak"),
                None,
                s("c0"),
                s("2"),
                s("6.25"),
                s("5"),
                s("2024-01-01T00:00:01Z")
            ],
            vec![
                s("8"),
                s("comma, inside"),
                s("n8"),
                s("c3"),
                s("2"),
                s("10.0"),
                s("1"),
                s("2024-01-01T00:00:02Z")
            ],
        ]
    );
    // The parallel reads keep page order: the same rows in the same order as the serial one.
    let order = |t: &str| {
        query(
            &p.path().join("http.duckdb"),
            &format!("SELECT list(id) FROM (SELECT id FROM {t})"),
        )
    };
    assert_eq!(order("api.page"), order("api.page_parallel"));
}

const SECRETS: [&str; 4] = ["test-token-123", "pass-456", "key-789", "secret-abc"];

#[test]
fn every_auth_style_works_and_no_secret_shows_anywhere() {
    let server = api(RECORDS);
    let b = base(&server);
    let p = Project::new();
    let env = [
        ("API_TOKEN", "test-token-123"),
        ("API_PASS", "pass-456"),
        ("API_KEY", "key-789"),
        ("CLIENT_SECRET", "secret-abc"),
    ];
    let styles = [
        (
            "bearer",
            "bearer/page",
            "auth = { type = \"bearer\", token = \"${API_TOKEN}\" }",
        ),
        (
            "basic",
            "basic/page",
            "auth = { type = \"basic\", username = \"user\", password = \"${API_PASS}\" }",
        ),
        (
            "key_header",
            "apikey/page",
            "auth = { type = \"api_key\", name = \"X-API-Key\", value = \"${API_KEY}\" }",
        ),
        (
            "key_query",
            "apikey/page",
            "auth = { type = \"api_key\", name = \"api_key\", value = \"${API_KEY}\", in = \"query\" }",
        ),
        // Each token is good for 3 requests: 10 pages need several refreshes mid-run.
        (
            "oauth",
            "oauth/page",
            &*format!(
                "auth = {{ type = \"oauth2\", token_url = \"{b}/token\", client_id = \"client-a\", \
             client_secret = \"${{CLIENT_SECRET}}\", scopes = [\"read\"] }}"
            ),
        ),
    ];
    let mut outputs = String::new();
    for (style, path, auth) in &styles {
        let source = format!("url = \"{b}/{path}\"\nrecords_path = \"data\"\n{PAGE}\n{auth}");
        let file = pipeline(&p, style, &source, &format!("api.{style}"), "append");
        let run = p
            .pipe_env(&["-vv", "run", &file, "--json"], &env)
            .assert_ok();
        outputs.push_str(&run.stdout);
        outputs.push_str(&run.stderr);
        expect_all(&p, &format!("api.{style}"), RECORDS);
        let status = p.pipe_env(&["status", &file], &env);
        outputs.push_str(&status.stdout);
        outputs.push_str(&status.stderr);
    }
    // A wrong token: a clear error naming the URL, nothing committed.
    let source = format!(
        "url = \"{b}/bearer/page\"\nrecords_path = \"data\"\n{PAGE}\nauth = {{ type = \"bearer\", token = \"wrong-token\" }}"
    );
    let file = pipeline(&p, "wrong", &source, "api.wrong", "append");
    let run = p.pipe(&["run", &file]).assert_failed();
    run.stderr_has(&format!(
        "GET {b}/bearer/page?page=1&per_page=10: HTTP 401 Unauthorized"
    ))
    .stderr_has("bad token");
    assert!(
        !table_exists(&p, "api.wrong"),
        "a refused run creates nothing"
    );
    // A wrong API key in the query: the URL in the error hides it.
    let source = format!(
        "url = \"{b}/apikey/page\"\nrecords_path = \"data\"\n{PAGE}\nauth = {{ type = \"api_key\", name = \"api_key\", value = \"not-the-key\", in = \"query\" }}"
    );
    let file = pipeline(&p, "wrong_key", &source, "api.wrong_key", "append");
    let run = p.pipe(&["run", &file]).assert_failed();
    run.stderr_has("HTTP 403 Forbidden").stderr_has("bad key");
    assert!(!run.stderr.contains("not-the-key"), "{}", run.stderr);
    outputs.push_str(&run.stderr);

    // Secrets appear in no output, no log line, no state and not in the destination file.
    let db = std::fs::read(p.path().join("http.duckdb")).expect("the database");
    let mut stored = String::from_utf8_lossy(&db).into_owned();
    for entry in walk(p.path()) {
        if entry.extension().is_none_or(|e| e != "duckdb") {
            stored.push_str(&String::from_utf8_lossy(
                &std::fs::read(&entry).unwrap_or_default(),
            ));
        }
    }
    for secret in SECRETS {
        assert!(!outputs.contains(secret), "{secret} printed:\n{outputs}");
        assert!(!stored.contains(secret), "{secret} stored in the project");
    }
    // The OAuth2 token was refreshed mid-run (each token serves 3 requests).
    let log = admin("GET", &format!("{b}/admin/log"));
    let tokens = log
        .as_array()
        .expect("a log")
        .iter()
        .filter(|r| r["path"] == "/token")
        .count();
    assert!(
        tokens >= 4,
        "10 pages with 3 requests per token need ≥ 4 tokens, got {tokens}"
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A request to the test API's admin endpoints with python's urllib (the tests have no HTTP
/// client of their own): `GET` returns the JSON answer, `POST` (empty body) returns `null`.
fn admin(method: &str, url: &str) -> serde_json::Value {
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, urllib.request\n\
             data = b'' if sys.argv[1] == 'POST' else None\n\
             request = urllib.request.Request(sys.argv[2], data=data, method=sys.argv[1])\n\
             body = urllib.request.urlopen(request).read().decode()\n\
             print(body if sys.argv[1] == 'GET' else 'null')",
            method,
            url,
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn transient_failures_are_retried_rate_limits_honoured_and_max_pages_stops() {
    let server = api(RECORDS);
    let b = base(&server);
    let p = Project::new();
    // Every page answers 500 twice first: each is fetched three times, loaded once.
    let source =
        format!("url = \"{b}/flaky/page\"\nrecords_path = \"data\"\nretry_backoff_ms = 10\n{PAGE}");
    let file = pipeline(&p, "flaky", &source, "api.flaky", "append");
    p.pipe(&["run", &file]).assert_ok();
    expect_all(&p, "api.flaky", RECORDS);
    // Two retries are not enough with max_retries = 1: a clear error, nothing committed.
    let source = format!(
        "url = \"{b}/flaky/offset\"\nrecords_path = \"items\"\nretry_backoff_ms = 10\nmax_retries = 1\npagination = {{ type = \"offset\", limit = 10 }}"
    );
    let file = pipeline(&p, "flaky2", &source, "api.flaky2", "append");
    p.pipe(&["run", &file])
        .assert_failed()
        .stderr_has("HTTP 500 Internal Server Error")
        .stderr_has("(after 2 attempts)");
    assert!(!table_exists(&p, "api.flaky2"));

    // 429 with Retry-After: 1 → the retry waits at least a second.
    let source = format!(
        "url = \"{b}/ratelimit/page\"\nrecords_path = \"data\"\nretry_backoff_ms = 10\n{PAGE}"
    );
    let file = pipeline(&p, "limited", &source, "api.limited", "append");
    p.pipe(&["run", &file]).assert_ok();
    expect_all(&p, "api.limited", RECORDS);
    let log = admin("GET", &format!("{b}/admin/log"));
    let times: Vec<f64> = log
        .as_array()
        .expect("log")
        .iter()
        .filter(|r| {
            r["path"] == "/ratelimit/page"
                && r["query"]
                    .as_str()
                    .is_some_and(|q| q.starts_with("page=1&"))
        })
        .map(|r| r["at"].as_f64().expect("time"))
        .collect();
    assert_eq!(times.len(), 2, "page 1 asked twice: {log}");
    assert!(
        times[1] - times[0] >= 1.0,
        "waited {}s",
        times[1] - times[0]
    );

    // max_pages stops early; requests_per_second spaces the requests.
    let source = format!(
        "url = \"{b}/page\"\nrecords_path = \"data\"\nmax_pages = 3\nrequests_per_second = 10\n{PAGE}"
    );
    let file = pipeline(&p, "capped", &source, "api.capped", "append");
    p.pipe(&["run", &file]).assert_ok();
    assert_eq!(totals(&p, "api.capped"), (30, 465, 30));
}

#[test]
fn malformed_pages_fail_with_page_and_offset_and_drift_follows_the_rules() {
    let server = api(RECORDS);
    let b = base(&server);
    let p = Project::new();
    let source = format!("url = \"{b}/broken/page\"\nrecords_path = \"data\"\n{PAGE}");
    let file = pipeline(&p, "broken", &source, "api.broken", "append");
    let run = p.pipe(&["run", &file]).assert_failed();
    run.stderr_has(&format!("page 3 ({b}/broken/page?page=3&per_page=10): malformed JSON at byte 30: expected a field name"));
    assert!(!table_exists(&p, "api.broken"), "nothing committed");

    // A field first seen on page 2 when the schema came from page 1: named, with the fix.
    let source = format!("url = \"{b}/drift/page\"\nrecords_path = \"data\"\n{PAGE}");
    let file = pipeline(&p, "drift", &source, "api.drift", "append");
    let run = p.pipe(&["run", &file]).assert_failed();
    run.stderr_has("page 2").stderr_has("extra");
    assert!(!table_exists(&p, "api.drift"));
    // Inferred over the first three pages: the new field is a column, qty (int on page 1,
    // float on page 2) is float64, and every record loads.
    let source =
        format!("url = \"{b}/drift/page\"\nrecords_path = \"data\"\ninfer_pages = 3\n{PAGE}");
    let file = pipeline(&p, "drift3", &source, "api.drift3", "append");
    p.pipe(&["run", &file]).assert_ok();
    expect_all(&p, "api.drift3", RECORDS);
    let rows = query(
        &p.path().join("http.duckdb"),
        "SELECT typeof(qty), count(extra), sum(qty) FROM api.drift3 GROUP BY ALL",
    );
    let expected_sum: f64 = (1..=RECORDS)
        .map(|i| (i % 7) as f64 + if (11..=20).contains(&i) { 0.5 } else { 0.0 })
        .sum();
    assert_eq!(
        rows,
        vec![vec![
            Some("DOUBLE".into()),
            Some("10".into()),
            Some(format!("{expected_sum:.1}"))
        ]]
    );

    // Drift between runs goes through `[metadata] schema_evolution`: a new field is added as
    // a column; int64 → float64 (not lossless) is refused, naming the column.
    let evolving = |name: &str, path: &str, extra: &str| {
        let file = pipeline(
            &p,
            name,
            &format!("url = \"{b}/{path}\"\nrecords_path = \"data\"\n{extra}\n{PAGE}"),
            "api.evolving",
            "append",
        );
        let text = p.read(&file).replace(
            "[destination]",
            "[metadata]\nschema_evolution = \"evolve\"\n\n[destination]",
        );
        p.write(&file, &text);
        file
    };
    p.pipe(&["run", &evolving("ev1", "page", "")]).assert_ok();
    p.pipe(&["run", &evolving("ev2", "grow/page", "")])
        .assert_ok();
    let rows = query(
        &p.path().join("http.duckdb"),
        "SELECT count(*), count(extra), min(extra) FROM api.evolving",
    );
    assert_eq!(
        rows,
        vec![vec![
            Some("190".into()),
            Some("95".into()),
            Some("x1".into())
        ]]
    );
    p.pipe(&["run", &evolving("ev3", "drift/page", "infer_pages = 3")])
        .assert_failed()
        .stderr_has("qty");
    assert_eq!(totals(&p, "api.evolving").0, 190, "nothing committed");

    // An API with no records at all: nothing to infer, nothing loaded, no table made up.
    let source = format!("url = \"{b}/empty\"\nrecords_path = \"data\"");
    let file = pipeline(&p, "empty", &source, "api.empty", "append");
    let run = p.pipe(&["run", &file, "--json"]).assert_ok();
    assert_eq!(run.json()["rows_written"], 0, "{}", run.stdout);
    assert!(!table_exists(&p, "api.empty"));
}

#[test]
fn incremental_runs_load_exactly_the_new_records_and_backfills_use_windows() {
    let server = api(RECORDS);
    let b = base(&server);
    let p = Project::new();
    // The API's `since` includes the boundary value, and several records share a second:
    // the boundary rows loaded before are dropped, the new ones kept.
    let source = format!(
        "url = \"{b}/page\"\nparams = {{ since = \"{{cursor}}\" }}\nrecords_path = \"data\"\n\
         cursor = \"updated_at\"\ncolumn_types = {{ updated_at = \"timestamptz\" }}\n{PAGE}"
    );
    let file = pipeline(&p, "inc", &source, "api.inc", "append");
    p.pipe(&["run", &file]).assert_ok();
    expect_all(&p, "api.inc", RECORDS);
    admin("POST", &format!("{b}/admin/add?n=7"));
    p.pipe(&["run", &file]).assert_ok();
    expect_all(&p, "api.inc", RECORDS + 7);
    let run = p.pipe(&["run", &file, "--json"]).assert_ok();
    assert_eq!(run.json()["rows_written"], 0, "{}", run.stdout);
    expect_all(&p, "api.inc", RECORDS + 7);

    // A run that fails (a contract rejects the new records) moves no cursor.
    admin("POST", &format!("{b}/admin/add?n=5"));
    let failing = p.read(&file).replace(
        "[destination]",
        "[contract]\non_violation = \"fail\"\n\n[[contract.rules]]\nname = \"small_ids\"\nexpression = \"id <= 100\"\n\n[destination]",
    );
    p.write("inc_strict.toml", &failing);
    p.pipe(&["run", "inc_strict.toml"])
        .assert_failed()
        .stderr_has("small_ids");
    expect_all(&p, "api.inc", RECORDS + 7);
    p.pipe(&["run", &file]).assert_ok();
    expect_all(&p, "api.inc", RECORDS + 12);

    // A backfill: each window's bounds go to the API as ISO-8601 parameters.
    let source = format!(
        "url = \"{b}/window\"\nparams = {{ start = \"{{window_start}}\", end = \"{{window_end}}\" }}\n\
         records_path = \"data\"\n{PAGE}"
    );
    let file = pipeline(&p, "windows", &source, "api.windows", "append");
    let run = p.pipe(&[
        "backfill",
        &file,
        "--from",
        "2024-01-01T00:00:00Z",
        "--to",
        "2024-01-01T00:00:30Z",
        "--step",
        "10s",
        "--json",
    ]);
    let run = run.assert_ok();
    // updated_at = 2024-01-01T00:00:00Z + id/3 seconds: ids 1..=89 fall before 00:00:30.
    assert_eq!(
        totals(&p, "api.windows"),
        (89, 89 * 90 / 2, 89),
        "{}",
        run.stdout
    );
}

#[test]
fn tls_with_a_custom_ca_is_trusted_only_when_configured() {
    let p = Project::new();
    let (ca, cert, key) = certificates(p.path());
    let script = root().join("tests/http/server.py");
    let server = Server::start(&python(), |port| {
        vec![
            script.display().to_string(),
            port.to_string(),
            "--records".into(),
            RECORDS.to_string(),
            "--tls".into(),
            cert.clone(),
            key.clone(),
        ]
    });
    let b = format!("https://127.0.0.1:{}", server.port);
    let source = format!("url = \"{b}/page\"\nrecords_path = \"data\"\nmax_retries = 0\n{PAGE}");
    let file = pipeline(&p, "untrusted", &source, "api.untrusted", "append");
    p.pipe(&["run", &file])
        .assert_failed()
        .stderr_has("certificate");
    assert!(!table_exists(&p, "api.untrusted"));
    let source = format!("{source}\nca_file = \"{ca}\"");
    let file = pipeline(&p, "trusted", &source, "api.trusted", "append");
    p.pipe(&["run", &file]).assert_ok();
    expect_all(&p, "api.trusted", RECORDS);
}
