//! Iceberg on a real Hive Metastore (Hive 2.3.9) and with warehouses in S3 (moto), beyond the
//! conformance suite (which runs every case on both): the Hive table pyiceberg and Spark see,
//! pyiceberg's HiveCatalog as a second writer, a lock left by a killed writer, orphan removal
//! in a bucket, and bad settings — each one clear error with nothing committed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::dest::Dest;
use common::{Project, py_in, python, root};
use serde_json::{Value, json};

fn hms(p: &Project, args: &[&str]) -> Value {
    let (ok, v) = py_in(p.path(), "hms.py", args);
    assert!(ok, "hms.py {args:?}: {v}");
    v
}

fn write_csv(p: &Project, ids: std::ops::Range<i64>) {
    let mut text = String::from("id,name\n");
    for i in ids {
        text.push_str(&format!("{i},n{i}\n"));
    }
    p.write("in.csv", &text);
}

const SOURCE: &str = "type = \"file\"\npath = \"in.csv\"\ncolumn_types = { id = \"int64\" }";

fn ids(dest: Dest, p: &Project, table: &str) -> Vec<i64> {
    dest.rows(p, table)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn tables_are_external_iceberg_tables_in_the_metastore_and_history_shows_both_writers() {
    let p = Project::new();
    let uri = common::hms::uri();
    let db = p.hive_db();
    // pyiceberg's HiveCatalog creates the table and appends to it ...
    let rows = json!([{"id": 1, "name": "a", "amount": "1.00"}]).to_string();
    let mut args = vec!["foreign".to_string()];
    args.extend(Dest::IcebergHive.reader(&p, "two"));
    args.extend(["--".to_string(), rows]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, v) = py_in(p.path(), "edge.py", &args);
    assert!(ok, "{v}");
    // ... pipe merges into it ...
    p.write("in.csv", "id,name,amount\n1,a2,2.00\n2,b,3.00\n");
    let source =
        "type = \"file\"\npath = \"in.csv\"\ncolumn_types = { amount = \"decimal(10,2)\" }";
    let f = Dest::IcebergHive.pipeline(&p, "two", source, "two", "merge", "merge_keys = [\"id\"]");
    p.pipe(&["run", &f]).assert_ok();
    assert_eq!(ids(Dest::IcebergHive, &p, "two"), [1, 2]);
    // ... and the metastore holds an external Iceberg table pointing at pipe's metadata,
    // with the previous (pyiceberg's) metadata recorded and Hive columns for other engines.
    let t = hms(&p, &["params", &uri, &db, "two"]);
    assert_eq!(t["tableType"], "EXTERNAL_TABLE", "{t}");
    assert_eq!(t["parameters"]["table_type"], "ICEBERG", "{t}");
    assert_eq!(t["parameters"]["EXTERNAL"], "TRUE", "{t}");
    let current = t["parameters"]["metadata_location"].as_str().unwrap();
    let previous = t["parameters"]["previous_metadata_location"]
        .as_str()
        .unwrap();
    assert!(
        current.ends_with(".metadata.json") && current != previous,
        "{t}"
    );
    let cols: Vec<(String, String)> = serde_json::from_value(t["cols"].clone()).unwrap();
    assert!(
        cols.contains(&("id".into(), "bigint".into()))
            && cols.contains(&("amount".into(), "decimal(10,2)".into())),
        "{cols:?}"
    );
    // pipe's history lists both writers' snapshots, newest first
    let h = p
        .pipe(&["table", "history", &f, "--json"])
        .assert_ok()
        .json();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0]["pipeline"], "two", "{h:?}");
    assert!(h[1]["pipeline"].is_null(), "pyiceberg's snapshot: {h:?}");
    assert_eq!(h[0]["current"], true);
}

/// The Hive table `table` holding ids 0..10, loaded by pipeline `name`; returns the
/// metastore's URI, the project's database and the pipeline file.
fn seeded(p: &Project, name: &str, table: &str) -> (String, String, String) {
    write_csv(p, 0..10);
    let f = Dest::IcebergHive.pipeline(p, name, SOURCE, table, "append", "");
    p.pipe(&["run", &f]).assert_ok();
    (common::hms::uri(), p.hive_db(), f)
}

#[test]
fn a_lock_left_by_a_killed_writer_is_waited_out_within_the_bound() {
    let p = Project::new();
    let (uri, db, f) = seeded(&p, "locked", "locked");
    // A writer takes the table's lock and is killed (SIGKILL) before it unlocks.
    let out = Command::new(python())
        .arg(root().join("tests/interop/hms.py"))
        .args(["hold-lock", &uri, &db, "locked"])
        .output()
        .unwrap();
    let held: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(held["state"], 1, "the killed writer held the lock: {held}");
    // With a short lock timeout pipe gives up with a clear error; nothing is committed and
    // the run's files are gone.
    write_csv(&p, 10..20);
    let short = Dest::IcebergHive.pipeline(&p, "short", SOURCE, "locked", "append", "");
    let text = p.read(&short).replace(
        "type = \"hive\",",
        "type = \"hive\", lock_timeout_secs = 3,",
    );
    p.write(&short, &text);
    let files = common::rows::on_disk(&p.path().join("wh"));
    let started = Instant::now();
    p.pipe(&["run", &short])
        .assert_failed()
        .stderr_has("still waiting for the lock after 3 s");
    let gave_up = started.elapsed();
    assert!(
        gave_up >= Duration::from_secs(3) && gave_up < Duration::from_secs(15),
        "gave up after {gave_up:?}"
    );
    assert_eq!(
        ids(Dest::IcebergHive, &p, "locked"),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        common::rows::on_disk(&p.path().join("wh")),
        files,
        "the run's data and metadata files are deleted"
    );
    // The metastore expires the dead writer's lock (hive.txn.timeout = 20 s in the test
    // metastore); the default wait (180 s) outlasts it, and the run reports how long it waited.
    let started = Instant::now();
    let run = p.pipe(&["run", &f]).assert_ok();
    let waited = started.elapsed();
    run.stderr_has("waiting for the Hive Metastore lock")
        .stderr_has("got the Hive Metastore lock");
    assert!(waited < Duration::from_secs(90), "waited {waited:?}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "lock of a killed writer: lock_timeout_secs = 3 gave up after {gave_up:?}; the next \
             run committed after {waited:?}"
        );
    }
    assert_eq!(
        ids(Dest::IcebergHive, &p, "locked"),
        (0..20).collect::<Vec<_>>()
    );
}

#[test]
fn two_writers_queued_on_the_lock_both_commit_one_on_top_of_the_other() {
    let p = Project::new();
    let (uri, db, _) = seeded(&p, "seed", "queued");
    // Another writer holds the table's lock for 6 s: both runs stage on the same snapshot
    // and wait; the first to get the lock commits, the second finds the table moved,
    // restages on it and commits after.
    let mut holder = Command::new(python())
        .arg(root().join("tests/interop/hms.py"))
        .args(["hold-lock-for", &uri, &db, "queued", "6"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut runs = Vec::new();
    for w in 0..2i64 {
        let csv = format!("w{w}.csv");
        let rows: String = (0..100)
            .map(|i| format!("{},n\n", 100 * (w + 1) + i))
            .collect();
        p.write(&csv, &format!("id,name\n{rows}"));
        let source =
            format!("type = \"file\"\npath = \"{csv}\"\ncolumn_types = {{ id = \"int64\" }}");
        let f = Dest::IcebergHive.pipeline(&p, &format!("w{w}"), &source, "queued", "append", "");
        runs.push(p.spawn(&["run", &f], &[]));
    }
    let logs: Vec<String> = runs
        .into_iter()
        .map(|r| {
            let out = r.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{stderr}");
            stderr
        })
        .collect();
    assert!(holder.wait().unwrap().success());
    assert!(
        logs.iter()
            .all(|l| l.contains("waiting for the Hive Metastore lock")),
        "both waited: {logs:?}"
    );
    // every row once; three snapshots, each the child of the one before
    let mut want: Vec<i64> = (0..10).chain(100..200).chain(200..300).collect();
    want.sort_unstable();
    assert_eq!(ids(Dest::IcebergHive, &p, "queued"), want);
    let reader = Dest::IcebergHive.reader(&p, "queued");
    let (ok, v) = py_in(p.path(), "ice.py", &["read", &reader[1], "wh", &reader[3]]);
    assert!(ok, "{v}");
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    for pair in snaps.windows(2) {
        assert_eq!(
            pair[1]["parent"], pair[0]["id"],
            "linear history: {snaps:?}"
        );
    }
}

#[test]
fn bad_metastores_and_stores_fail_clearly_and_commit_nothing() {
    let p = Project::new();
    write_csv(&p, 0..3);
    // nothing listens there: a clear error in bounded time
    let bad = |name: &str, dest: &str| {
        p.write(
            &format!("{name}.toml"),
            &format!("name = \"{name}\"\n[source]\n{SOURCE}\n[destination]\n{dest}\n"),
        );
        format!("{name}.toml")
    };
    let f = bad(
        "down",
        "type = \"iceberg\"\ncatalog = { type = \"hive\", uri = \"thrift://127.0.0.1:1\" }\ntable = \"d.t\"",
    );
    let started = Instant::now();
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("Hive Metastore thrift://127.0.0.1:1");
    assert!(started.elapsed() < Duration::from_secs(60));

    // a table that exists in the metastore but is not Iceberg is left alone
    let uri = common::hms::uri();
    let db = p.hive_db();
    hms(&p, &["create-plain", &uri, &db, "plain"]);
    let f = bad(
        "plain",
        &format!(
            "type = \"iceberg\"\ncatalog = {{ type = \"hive\", uri = \"{uri}\" }}\ntable = \"{db}.plain\""
        ),
    );
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has(&format!("table {db}.plain exists in the Hive Metastore"))
        .stderr_has("is not an Iceberg table");
    let t = hms(&p, &["params", &uri, &db, "plain"]);
    assert_eq!(t["tableType"], "MANAGED_TABLE", "untouched: {t}");

    // S3: a missing bucket, wrong credentials (never printed), an endpoint nobody serves
    let s3 = p.s3();
    let storage = s3.storage_toml();
    let sql = |warehouse: &str, storage: &str| {
        format!(
            "type = \"iceberg\"\ncatalog = {{ type = \"sql\", uri = \"sqlite://cat/catalog.db\", \
             warehouse = \"{warehouse}\" }}\ntable = \"ns.t\"\n{storage}"
        )
    };
    let f = bad("nobucket", &sql("s3://no-such-bucket/wh", &storage));
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("no-such-bucket");
    // (a server that checks signatures, as S3 does: the right key works, a wrong secret not)
    let checked = common::s3::S3::start_authenticated();
    let good = checked.storage_toml();
    let f = bad("good", &sql("s3://lake/good", &good));
    p.pipe(&["run", &f]).assert_ok();
    let secret = checked.env()[2].1.clone();
    let wrong = good.replace(&secret, "wrong-secret-value");
    p.write("cat2/.keep", "");
    let f = bad(
        "creds",
        &sql("s3://lake/wh", &wrong).replace("cat/catalog.db", "cat2/catalog.db"),
    );
    let run = p.pipe(&["run", &f]).assert_failed();
    assert!(
        !run.stderr.contains("wrong-secret-value") && !run.stderr.contains(&secret),
        "secret printed: {}",
        run.stderr
    );
    run.stderr_has("403");
    assert_eq!(checked.keys("wh/"), Vec::<String>::new(), "nothing written");
    let unreachable = storage.replace(&s3.env()[0].1, "http://127.0.0.1:1");
    let f = bad("unreach", &sql("s3://lake/wh", &unreachable));
    let started = Instant::now();
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("127.0.0.1:1");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        s3.keys(""),
        Vec::<String>::new(),
        "nothing written to the bucket"
    );
    // a typo in storage_options is named
    let f = bad(
        "typo",
        &sql(
            "s3://lake/wh",
            "storage_options = { \"s3.endpiont\" = \"x\" }",
        ),
    );
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("storage option `s3.endpiont`");
}

/// `pipe table vacuum --orphans` of every unreferenced file (`dry`: only listed).
fn remove_orphans(p: &Project, pipeline: &str, dry: bool) -> Value {
    let mut args = vec![
        "table",
        "vacuum",
        pipeline,
        "--older-than",
        "0s",
        "--orphans",
    ];
    if dry {
        args.push("--dry-run");
    }
    args.push("--json");
    p.pipe(&args).assert_ok().json()
}

#[test]
fn partition_values_with_url_characters_name_their_objects_exactly() {
    // Partition values are escaped in file paths as Java escapes them (`#` would end a URL
    // for readers: pyiceberg cuts the path there); pyiceberg finds every file, and the object
    // keys are the escaped paths exactly as written.
    let p = Project::new();
    p.write(
        "in.csv",
        "id,tag\n1,a~b\n2,c#d\n3,e%41f\n4,g?h\n5,i j\n6,plain\n",
    );
    let source = "type = \"file\"\npath = \"in.csv\"\ncolumn_types = { id = \"int64\" }";
    let f = Dest::IcebergS3.pipeline(
        &p,
        "chars",
        source,
        "chars",
        "append",
        "partition_by = [\"tag\"]",
    );
    p.pipe(&["run", &f]).assert_ok();
    let rows: Vec<(i64, String)> = Dest::IcebergS3
        .rows(&p, "chars")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["tag"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(i64, String)> = ["a~b", "c#d", "e%41f", "g?h", "i j", "plain"]
        .iter()
        .enumerate()
        .map(|(i, t)| (i as i64 + 1, t.to_string()))
        .collect();
    assert_eq!(rows, want);
    let keys = p.s3().keys("wh/ns/chars/data/");
    assert!(
        keys.iter().any(|k| k.contains("tag=c%23d/"))
            && keys.iter().any(|k| k.contains("tag=a%7Eb/"))
            && keys.iter().any(|k| k.contains("tag=i+j/")),
        "{keys:?}"
    );
    // no live file looks like an orphan
    let v = remove_orphans(&p, &f, true);
    assert_eq!(v["deleted"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn vacuum_removes_orphans_from_a_bucket_and_keeps_the_table() {
    let p = Project::new();
    write_csv(&p, 0..100);
    let f = Dest::IcebergS3.pipeline(&p, "orph", SOURCE, "orph", "append", "");
    p.pipe(&["run", &f]).assert_ok();
    let live = p.s3().keys("wh/");
    // what a killed run leaves: a data file no snapshot references
    let endpoint = &p.s3().env()[0].1;
    let orphan = "wh/ns/orph/data/killed-run-00000.parquet";
    let put = Command::new(python())
        .args([
            "-c",
            "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1]).put_object(Bucket='lake', Key=sys.argv[2], Body=b'PAR1')",
            endpoint,
            orphan,
        ])
        .envs(p.s3().env())
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let v = remove_orphans(&p, &f, false);
    assert!(
        v.to_string().contains("killed-run-00000.parquet"),
        "the orphan is reported: {v}"
    );
    assert_eq!(p.s3().keys("wh/"), live, "exactly the orphan is gone");
    assert_eq!(
        ids(Dest::IcebergS3, &p, "orph"),
        (0..100).collect::<Vec<_>>()
    );
}
