//! The destination conformance suite: one set of cases, run against every table destination
//! described in `common/dest.rs` (DuckDB, Delta, Iceberg on the SQL catalog, on REST
//! catalogs, on a Hive Metastore and with S3 and Azure warehouses, and Parquet files) and read back
//! by each one's independent reader. A new destination or catalog adds a description there
//! and passes these (plus the per-destination edge cases of edge.rs and overlap.rs); the cases
//! that merge skip a destination without `merge` (`Dest::merges`).
//!
//! Cases: every mode, unpartitioned and partitioned, against a reference; duplicate and NULL
//! keys within a run; every type of the type-extremes fixture in every mode; schema evolution
//! under evolve, freeze and discard_columns; a table first written by the format's own Python
//! writer, then merged by pipe; two pipelines writing one table at once; a run failing
//! partway leaves every file byte-identical; `kill -9` at random points, then a rerun.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::dest::Dest;
use common::{PgObjects, Project, pg_url, psql, py_in, unique};
use serde_json::{Value, json};

/// One test row: `(name, amount, region)`; `None` amount is NULL.
type Reference = BTreeMap<i64, (String, Option<String>, String)>;

const PARQUET: &str = "type = \"file\"\npath = \"fx/extremes.parquet\"";

const SOURCE: &str = "type = \"file\"\npath = \"in.csv\"\ncolumn_types = { id = \"int64\", amount = \"decimal(10,2)\" }";

fn write_rows(p: &Project, rows: &[(i64, &str, Option<&str>, &str)]) {
    let mut text = String::from("id,name,amount,region\n");
    for (id, name, amount, region) in rows {
        text.push_str(&format!("{id},{name},{},{region}\n", amount.unwrap_or("")));
    }
    p.write("in.csv", &text);
}

fn apply(reference: &mut Reference, rows: &[(i64, &str, Option<&str>, &str)]) {
    for (id, name, amount, region) in rows {
        reference.insert(
            *id,
            (
                name.to_string(),
                amount.map(|a| a.to_string()),
                region.to_string(),
            ),
        );
    }
}

/// The table as its reader sees it, as a reference map.
fn table(dest: Dest, p: &Project, name: &str) -> Reference {
    let rows = dest.rows(p, name);
    let mut out = Reference::new();
    for r in rows.as_array().unwrap() {
        let id = r["id"].as_i64().unwrap();
        let amount = r["amount"].as_str().map(|a| {
            // decimals as exact text: normalise to two places
            let v: f64 = a.parse().unwrap();
            format!("{v:.2}")
        });
        let previous = out.insert(
            id,
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                amount,
                r["region"].as_str().unwrap_or_default().to_string(),
            ),
        );
        assert!(previous.is_none(), "{}: key {id} twice", dest.name());
    }
    out
}

fn layouts(dest: Dest) -> Vec<(&'static str, String)> {
    let mut out = vec![("unpartitioned", String::new())];
    if let Some(by) = dest.partition_by("region") {
        out.push(("partitioned", by));
    }
    out
}

#[test]
fn every_mode_on_every_layout_matches_a_reference() {
    for dest in Dest::ALL {
        for (layout, keys) in layouts(dest) {
            let p = Project::new();
            let what = format!("{} {layout}", dest.name());
            let mut reference = Reference::new();
            let append = dest.pipeline(&p, "a", SOURCE, "t", "append", &keys);
            let first = [
                (1, "a", Some("1.50"), "eu"),
                (2, "b", None, "us"),
                (3, "c", Some("0.01"), "eu"),
            ];
            write_rows(&p, &first);
            p.pipe(&["run", &append]).assert_ok();
            apply(&mut reference, &first);
            let second = [
                (4, "d", Some("-2.00"), "apac"),
                (5, "e", Some("3.00"), "us"),
            ];
            write_rows(&p, &second);
            p.pipe(&["run", &append]).assert_ok();
            apply(&mut reference, &second);
            assert_eq!(table(dest, &p, "t"), reference, "{what}: appends");

            // merge: updates, inserts, a duplicate key (the last row wins)
            if dest.merges() {
                let merge = dest.pipeline(
                    &p,
                    "m",
                    SOURCE,
                    "t",
                    "merge",
                    &format!("merge_keys = [\"id\"]\n{keys}"),
                );
                let changes = [
                    (2, "b2", Some("9.99"), "us"),
                    (6, "f", Some("6.00"), "eu"),
                    (3, "c-first", Some("1.00"), "eu"),
                    (3, "c2", Some("2.00"), "apac"),
                ];
                write_rows(&p, &changes);
                let v = p.pipe(&["run", &merge, "--json"]).assert_ok().json();
                apply(&mut reference, &changes);
                assert_eq!(table(dest, &p, "t"), reference, "{what}: merge");
                assert_eq!(v["commit"]["rows_inserted"], 1, "{what}: {v}");
                assert_eq!(v["commit"]["rows_updated"], 2, "{what}: {v}");
            }

            // replace: the run's rows are the table
            let replace = dest.pipeline(&p, "r", SOURCE, "t", "replace", &keys);
            let fresh = [(10, "x", Some("1.00"), "us"), (11, "y", None, "eu")];
            write_rows(&p, &fresh);
            p.pipe(&["run", &replace]).assert_ok();
            reference.clear();
            apply(&mut reference, &fresh);
            assert_eq!(table(dest, &p, "t"), reference, "{what}: replace");
        }
    }
}

#[test]
fn null_keys_match_null_keys_and_the_last_of_a_run_wins() {
    for dest in Dest::ALL.into_iter().filter(|d| d.merges()) {
        let p = Project::new();
        let merge = dest.pipeline(&p, "n", SOURCE, "n", "merge", "merge_keys = [\"amount\"]");
        write_rows(
            &p,
            &[
                (1, "a", None, "eu"),
                (2, "b", None, "us"),
                (3, "c", Some("1.00"), "eu"),
            ],
        );
        p.pipe(&["run", &merge]).assert_ok();
        let rows = dest.rows(&p, "n");
        let names: Vec<&str> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["b", "c"],
            "{}: one row per key, NULL too",
            dest.name()
        );
        write_rows(&p, &[(9, "z", None, "apac")]);
        p.pipe(&["run", &merge]).assert_ok();
        let rows = dest.rows(&p, "n");
        let ids: Vec<i64> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(
            ids,
            [3, 9],
            "{}: the NULL key's row was replaced",
            dest.name()
        );
    }
}

#[test]
fn schema_evolution_policies_behave_the_same_everywhere() {
    for dest in Dest::ALL {
        let p = Project::new();
        let f = dest.pipeline(&p, "s", SOURCE, "s", "append", "");
        write_rows(&p, &[(1, "a", Some("1.00"), "eu")]);
        p.pipe(&["run", &f]).assert_ok();
        let with_policy = |policy: &str| {
            let text = p.read(&f).replace(
                "[destination]",
                &format!("[metadata]\nschema_evolution = \"{policy}\"\n[destination]"),
            );
            p.write(
                "policy.toml",
                &text.replace("name = \"s\"", "name = \"s2\""),
            );
            "policy.toml"
        };
        p.write("in.csv", "id,name,amount,region,extra\n2,b,2.00,us,x\n");
        let f2 = with_policy("freeze");
        p.pipe(&["run", f2])
            .assert_failed()
            .stderr_has("column `extra`");
        assert_eq!(
            dest.rows(&p, "s").as_array().unwrap().len(),
            1,
            "{}",
            dest.name()
        );
        let f2 = with_policy("discard_columns");
        p.pipe(&["run", f2]).assert_ok();
        let rows = dest.rows(&p, "s");
        assert!(rows[1].get("extra").is_none(), "{}: {rows}", dest.name());
        let f2 = with_policy("evolve");
        p.write("in.csv", "id,name,amount,region,extra\n3,c,3.00,eu,y\n");
        p.pipe(&["run", f2]).assert_ok();
        let rows = dest.rows(&p, "s");
        let extra: Vec<Value> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["extra"].clone())
            .collect();
        assert_eq!(
            extra,
            [Value::Null, Value::Null, json!("y")],
            "{}",
            dest.name()
        );
    }
}

#[test]
fn a_table_written_by_the_formats_own_writer_takes_a_merge_from_pipe() {
    for dest in Dest::ALL.into_iter().filter(|d| d.merges()) {
        let p = Project::new();
        let rows = json!([
            {"id": 1, "name": "a", "amount": "1.00"},
            {"id": 2, "name": "b", "amount": null},
        ])
        .to_string();
        let mut args = vec!["foreign".to_string()];
        args.extend(dest.reader(&p, "foreign"));
        args.push("--".into());
        args.push(rows);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, v) = py_in(p.path(), "edge.py", &args);
        assert!(ok, "{}: {v}", dest.name());
        p.write("in.csv", "id,name,amount\n2,b2,5.00\n3,c,6.00\n");
        let source =
            "type = \"file\"\npath = \"in.csv\"\ncolumn_types = { amount = \"decimal(10,2)\" }";
        let f = dest.pipeline(
            &p,
            "fm",
            source,
            "foreign",
            "merge",
            "merge_keys = [\"id\"]",
        );
        p.pipe(&["run", &f]).assert_ok();
        let got: Vec<(i64, String)> = dest
            .rows(&p, "foreign")
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_i64().unwrap(),
                    r["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, "a".to_string()),
                (2, "b2".to_string()),
                (3, "c".to_string())
            ],
            "{}",
            dest.name()
        );
    }
}

#[test]
fn two_pipelines_writing_one_table_at_once_both_land() {
    for dest in Dest::ALL {
        let p = Project::new();
        let mut files = Vec::new();
        for w in 0..2i64 {
            let csv = format!("w{w}.csv");
            let rows: String = (0..500)
                .map(|i| format!("{},n{i},1.00,eu\n", w * 1000 + i))
                .collect();
            p.write(&csv, &format!("id,name,amount,region\n{rows}"));
            let source = format!(
                "type = \"file\"\npath = \"{csv}\"\ncolumn_types = {{ amount = \"decimal(10,2)\" }}"
            );
            let f = dest.pipeline(&p, &format!("w{w}"), &source, "shared", "append", "");
            p.write(
                &f,
                &format!(
                    "{}\n[runtime]\nretry_backoff_ms = 300\nretries = 8\n",
                    p.read(&f)
                ),
            );
            files.push(f);
        }
        // the table exists first, so the two race on commits, not on creating it
        let seed = dest.pipeline(&p, "seed", SOURCE, "shared", "append", "");
        write_rows(&p, &[(-1, "seed", None, "eu")]);
        p.pipe(&["run", &seed]).assert_ok();
        let children: Vec<_> = files.iter().map(|f| p.spawn(&["run", f], &[])).collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}: {stderr}", dest.name());
        }
        let got = table(dest, &p, "shared");
        assert_eq!(got.len(), 1001, "{}", dest.name());
    }
}

#[test]
fn kill_9_at_random_points_then_a_rerun_loads_every_row_once() {
    let mut pg = PgObjects::new();
    let t = unique("pipe_conf_kill");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, amount numeric(10,2), region text); \
             INSERT INTO {t} SELECT g, 'n' || g, g % 100, 'eu' FROM generate_series(1, 20000) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let mut seed: u64 = 0x00c0_ffee_1234_5678;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for dest in Dest::ALL {
        let p = Project::new();
        let source = format!(
            "type = \"postgres\"\nurl = \"{}\"\ntable = \"{t}\"\ncursor = \"id\"\nbatch_rows = 500",
            pg_url()
        );
        let f = dest.pipeline(&p, "kill", &source, "kill", "append", "");
        let mut kills = 0;
        let mut window = 1500;
        for _ in 0..30 {
            if kills == 4 {
                break;
            }
            let mut child = p
                .command(&["run", &f, "--no-progress"], &[])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(next(window)));
            if common::kill9(&mut child) {
                kills += 1;
            } else {
                window = (window * 7 / 10).max(20);
            }
        }
        assert!(kills > 0, "{}: no run was killed mid-way", dest.name());
        p.pipe(&["run", &f]).assert_ok();
        let got = table(dest, &p, "kill");
        let want: usize = psql(&format!("SELECT count(*) FROM {t}")).parse().unwrap();
        assert_eq!(
            got.len(),
            want,
            "{}: every row once after {kills} kills",
            dest.name()
        );
    }
}

/// The type-extremes fixture loads exactly through every destination and mode, and a second
/// run of the same data changes nothing (append aside, which adds it again).
#[test]
fn type_extremes_round_trip_through_every_destination_and_mode() {
    for dest in Dest::ALL {
        for mode in ["append", "replace", "merge"] {
            if mode == "merge" && !dest.merges() {
                continue;
            }
            let (p, expected) = common::dest::extremes();
            let keys = if mode == "merge" {
                "merge_keys = [\"id\"]"
            } else {
                ""
            };
            let f = dest.pipeline(&p, "extremes", PARQUET, "extremes", mode, keys);
            p.pipe(&["run", &f]).assert_ok();
            assert_eq!(
                dest.rows(&p, "extremes"),
                expected,
                "{} {mode}: first run",
                dest.name()
            );
            if mode != "append" {
                p.pipe(&["run", &f]).assert_ok();
                assert_eq!(
                    dest.rows(&p, "extremes"),
                    expected,
                    "{} {mode}: second run",
                    dest.name()
                );
            }
        }
    }
}

/// A run that fails partway — a bad value in the last of three files, after the first two were
/// written — leaves every destination's table exactly as it was: same rows for its reader,
/// same commits, every file byte-identical and not one more on disk.
#[test]
fn a_failed_run_leaves_every_table_and_its_files_as_they_were() {
    for dest in Dest::ALL {
        let p = Project::new();
        p.write("in/a.csv", "id,v\n1,a\n2,b\n");
        let source = "type = \"file\"\npath = \"in\"\ncolumn_types = { id = \"int64\" }";
        let f = dest.pipeline(&p, "fail", source, "fail", "append", "");
        p.pipe(&["run", &f]).assert_ok();
        let rows = dest.rows(&p, "fail");
        let commits = dest.commits(&p, "fail");
        // every file of the table and its catalog, with its bytes
        // (and the keys of an object-store warehouse: a failed run deletes exactly the objects
        // it wrote; objects are never rewritten in place)
        let files = |p: &Project| {
            ["db", "lake", "wh", "cat", "files"]
                .iter()
                .flat_map(|d| common::rows::on_disk(&p.path().join(d)))
                .filter(|f| !f.ends_with(".wal") && !f.ends_with(".tmp"))
                .map(|f| {
                    let bytes = std::fs::read(&f).unwrap();
                    (f, bytes)
                })
                .chain(
                    dest.objects(p)
                        .into_iter()
                        .map(|(k, size)| (format!("object:{k}"), size.to_le_bytes().to_vec())),
                )
                .collect::<BTreeMap<_, _>>()
        };
        let before = files(&p);
        p.write("in/b.csv", "id,v\n3,c\n4,d\n");
        p.write("in/c.csv", "id,v\n5,e\nsix,f\n");
        p.pipe(&["run", &f])
            .assert_failed()
            .stderr_has("c.csv:3: column `id`: cannot parse \"six\"");
        assert_eq!(dest.rows(&p, "fail"), rows, "{}", dest.name());
        assert_eq!(dest.commits(&p, "fail"), commits, "{}", dest.name());
        assert_eq!(
            files(&p),
            before,
            "{}: files left behind or changed",
            dest.name()
        );
    }
}

/// Whether `files` (sorted by minimum) hold disjoint ranges of their column.
fn disjoint(files: &[Value]) -> bool {
    files
        .windows(2)
        .all(|w| w[0]["max"].as_i64().unwrap() < w[1]["min"].as_i64().unwrap())
}

/// A merge clusters its rows by the merge keys: every file holds one range of keys, so a
/// later merge of keys in a narrow range rewrites only the file or two they fall in — and
/// the files stay disjoint. `cluster_by = []` writes rows as they come.
#[test]
fn merges_write_disjoint_files_and_touch_only_the_files_their_keys_fall_in() {
    // 200k rows with even ids, in a shuffled order
    let n: i64 = 200_000;
    let mut ids: Vec<i64> = (0..n).map(|i| i * 2).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..ids.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ids.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut base = String::from("id,name,amount,region\n");
    for id in &ids {
        base.push_str(&format!("{id},name-{id},1.00,eu\n"));
    }
    // 50 updates and 50 inserts (odd ids) between 100000 and 100200
    let mut change = String::from("id,name,amount,region\n");
    for id in 100_000..100_100 {
        change.push_str(&format!("{id},changed,2.00,eu\n"));
    }
    for dest in [Dest::Delta, Dest::Iceberg] {
        let p = Project::new();
        let keys = "merge_keys = [\"id\"]\ntarget_file_size_mb = 1\nwriters = 2";
        let f = dest.pipeline(&p, "c", SOURCE, "c", "merge", keys);
        p.write("in.csv", &base);
        p.pipe(&["run", &f]).assert_ok();
        let before = dest.files(&p, "c", "id").unwrap();
        assert!(before.len() >= 4, "{}: {} files", dest.name(), before.len());
        assert!(disjoint(&before), "{}: {before:?}", dest.name());
        let rows: i64 = before.iter().map(|f| f["rows"].as_i64().unwrap()).sum();
        assert_eq!(rows, n, "{}", dest.name());
        // distinct ids and names are written plain; the repeated amount and region keep a
        // dictionary (pyarrow reads the files' column chunks)
        for file in &before {
            assert_eq!(
                file["dictionary"],
                json!(["amount", "region"]),
                "{}",
                dest.name()
            );
        }

        p.write("in.csv", &change);
        let v = p.pipe(&["run", &f, "--json"]).assert_ok().json();
        assert_eq!(v["commit"]["rows_updated"], 50, "{}: {v}", dest.name());
        assert_eq!(v["commit"]["rows_inserted"], 50, "{}: {v}", dest.name());
        let after = dest.files(&p, "c", "id").unwrap();
        let paths = |files: &[Value]| -> std::collections::BTreeSet<String> {
            files
                .iter()
                .map(|f| f["path"].as_str().unwrap().to_string())
                .collect()
        };
        let gone = paths(&before).difference(&paths(&after)).count();
        assert!(
            (1..=2).contains(&gone),
            "{}: a merge of 100 keys in a narrow range rewrote {gone} of {} files",
            dest.name(),
            before.len()
        );
        assert!(disjoint(&after), "{}: {after:?}", dest.name());
        let got = table(dest, &p, "c");
        assert_eq!(got.len() as i64, n + 50, "{}", dest.name());
        assert_eq!(got[&100_001].0, "changed", "{}", dest.name());
        assert_eq!(got[&100_002].0, "changed", "{}", dest.name());
        assert_eq!(got[&100_200].0, "name-100200", "{}", dest.name());

        // not clustered: round-robin writers, every file spans the keys
        let q = Project::new();
        let f = dest.pipeline(
            &q,
            "r",
            SOURCE,
            "r",
            "merge",
            &format!("{keys}\ncluster_by = []"),
        );
        q.write("in.csv", &base);
        q.pipe(&["run", &f]).assert_ok();
        let files = dest.files(&q, "r", "id").unwrap();
        assert!(
            files.len() >= 2 && !disjoint(&files),
            "{}: {files:?}",
            dest.name()
        );
    }
}
