//! `pipe iceberg relocate`: a table copied block for block to another place (here `cp -r`)
//! made readable there by rewriting its metadata only — read back by pyiceberg with the old
//! place moved away, time travel included; kept in sync incrementally after more commits and
//! another copy pass; and refused, with nothing written, when the copy is incomplete or the
//! target is not a relocation of the source.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::iceberg::{files, py_write_in};
use common::{Project, py_in};
use serde_json::{Value, json};

fn pipeline(p: &Project, name: &str, csv: &str, dest: &str) -> String {
    let file = format!("{name}.toml");
    p.write(
        &file,
        &format!(
            "name = \"{name}\"\n[source]\ntype = \"file\"\npath = \"{csv}\"\n\
             column_types = {{ id = \"int64\" }}\n\
             [destination]\ntype = \"iceberg\"\n\
             catalog = {{ type = \"sql\", uri = \"sqlite://src/catalog.db\", warehouse = \"src/wh\" }}\n\
             table = \"s.t\"\npartition_by = [\"region\"]\n{dest}\n"
        ),
    );
    file
}

/// Writes `csv` as `a.csv` and loads it into the source table; returns the pipeline file.
fn load_source(p: &Project, csv: &str) -> String {
    p.write("a.csv", csv);
    let file = pipeline(p, "src", "a.csv", "");
    p.pipe(&["run", &file]).assert_ok();
    file
}

/// `cp -r from/. to` (creating `to`): a replication pass that overwrites and never deletes.
fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs `f` with `dir` moved away, so nothing can read the old place.
fn without<T>(dir: &Path, f: impl FnOnce() -> T) -> T {
    let away = dir.with_extension("away");
    std::fs::rename(dir, &away).unwrap();
    let out = f();
    std::fs::rename(&away, dir).unwrap();
    out
}

fn relocate(p: &Project, args: &[&str]) -> common::Run {
    let mut all = vec!["iceberg", "relocate"];
    all.extend_from_slice(args);
    p.pipe(&all)
}

fn read_at(p: &Project, catalog: &str, snapshot: Option<i64>) -> Value {
    let snap = snapshot.map(|s| s.to_string());
    let mut args = vec!["read", catalog, "wh", "s.t", "--order", "id"];
    if let Some(s) = &snap {
        args.extend_from_slice(&["--snapshot", s]);
    }
    let (ok, v) = py_in(p.path(), "ice.py", &args);
    assert!(ok, "pyiceberg could not read {catalog}: {v}");
    v
}

fn abs(p: &Project, rel: &str) -> PathBuf {
    p.path().join(rel)
}

fn relocated_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in walk(dir) {
        if entry.to_string_lossy().contains(".relocated-") {
            n += 1;
        }
    }
    n
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn a_copied_table_reads_at_its_new_place_and_follows_the_source_incrementally() {
    let p = Project::new();
    // The source: three snapshots, a schema change and a merge, partitioned.
    let append = load_source(&p, "id,region,name\n1,eu,a\n2,us,b\n3,eu,c\n");
    p.write("a.csv", "id,region,name,score\n4,us,d,40\n5,eu,e,50\n");
    p.pipe(&["run", &append]).assert_ok();
    p.write("m.csv", "id,region,name,score\n2,us,B,20\n6,eu,f,60\n");
    let merge = pipeline(
        &p,
        "src_merge",
        "m.csv",
        "mode = \"merge\"\nmerge_keys = [\"id\"]",
    );
    p.pipe(&["run", &merge]).assert_ok();
    let source = read_at(&p, "src/catalog.db", None);
    assert_eq!(source["count"], 6);
    let first = source["snapshots"][0]["id"].as_i64().unwrap();
    let source_first = read_at(&p, "src/catalog.db", Some(first));

    let (from, to) = (abs(&p, "src/wh"), abs(&p, "dr/wh"));
    copy(&from, &to);
    let (from_s, to_s) = (from.to_str().unwrap(), to.to_str().unwrap());
    let args = [
        "sqlite://src/catalog.db#s.t",
        "--from",
        from_s,
        "--to",
        to_s,
        "--register-as",
        "sqlite://dr/catalog.db#s.t",
        "--json",
    ];
    let report = relocate(&p, &args).assert_ok().json();
    assert_eq!(report["outcome"], "registered", "{report}");
    assert_eq!(report["snapshots"], 3);
    assert_eq!(report["new_snapshots"], 3);
    assert_eq!(report["manifests_reused"], 0);
    assert!(report["files_checked"].as_u64().unwrap() >= 5, "{report}");

    // Read at the new place with the old one gone: the same rows, every path under dr/.
    let (copy_now, copy_first) = without(&from, || {
        (
            read_at(&p, "dr/catalog.db", None),
            read_at(&p, "dr/catalog.db", Some(first)),
        )
    });
    assert_eq!(copy_now["checksum"], source["checksum"]);
    assert_eq!(copy_now["schema"], source["schema"]);
    assert_eq!(copy_now["snapshots"].as_array().unwrap().len(), 3);
    assert_eq!(copy_first["checksum"], source_first["checksum"]);
    assert_eq!(copy_first["count"], 3);
    for f in files(&copy_now) {
        assert!(f.contains("/dr/wh/"), "{f} is not at the new place");
    }

    // More commits at the source, a second copy pass, an incremental relocation.
    p.write("a.csv", "id,region,name,score\n7,us,g,70\n");
    p.pipe(&["run", &append]).assert_ok();
    copy(&from, &to);
    let written_before = relocated_files(&to);
    let report = relocate(&p, &args).assert_ok().json();
    assert_eq!(report["outcome"], "committed", "{report}");
    assert_eq!(report["new_snapshots"], 1);
    // One appended snapshot: its new manifest rewritten, the others reused.
    assert_eq!(report["manifests_rewritten"], 1, "{report}");
    assert!(
        report["manifests_reused"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(report["manifest_lists_written"], 1);
    assert_eq!(relocated_files(&to), written_before + 2);
    let source = read_at(&p, "src/catalog.db", None);
    let copy_now = without(&from, || read_at(&p, "dr/catalog.db", None));
    assert_eq!(copy_now["count"], 7);
    assert_eq!(copy_now["checksum"], source["checksum"]);
    assert_eq!(copy_now["current"], source["current"]);

    // Nothing new: nothing committed.
    assert_eq!(
        relocate(&p, &args).assert_ok().json()["outcome"],
        "unchanged"
    );

    // A commit to the copy itself makes it no longer a mirror: refused.
    p.write("x.csv", "id,region,name,score\n99,eu,x,1\n");
    p.write(
        "dr.toml",
        "name = \"dr\"\n[source]\ntype = \"file\"\npath = \"x.csv\"\n\
         column_types = { id = \"int64\" }\n[destination]\ntype = \"iceberg\"\n\
         catalog = { type = \"sql\", uri = \"sqlite://dr/catalog.db\", warehouse = \"dr/wh\" }\n\
         table = \"s.t\"\n",
    );
    p.pipe(&["run", "dr.toml"]).assert_ok();
    relocate(&p, &args)
        .assert_failed()
        .stderr_has("written to after its relocation");
}

#[test]
fn a_table_pyiceberg_wrote_relocates_from_its_metadata_file() {
    let p = Project::new();
    let rows = json!([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]);
    py_write_in(
        &p,
        "py/catalog.db",
        "py.t",
        "append",
        &rows,
        &["--partition", "id"],
    );
    let more = json!([{"id": 2, "name": "B"}, {"id": 3, "name": "c"}]);
    py_write_in(&p, "py/catalog.db", "py.t", "upsert", &more, &[]);
    let (ok, source) = py_in(
        p.path(),
        "ice.py",
        &["read", "py/catalog.db", "wh", "py.t", "--order", "id"],
    );
    assert!(ok, "{source}");
    let metadata_dir = abs(&p, "wh/py/t/metadata");
    let latest = walk(&metadata_dir)
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".metadata.json"))
        .max()
        .unwrap();

    let (from, to) = (abs(&p, "wh"), abs(&p, "copy/wh"));
    copy(&from, &to);
    let run = relocate(
        &p,
        &[
            latest.to_str().unwrap(),
            "--from",
            from.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
            "--json",
        ],
    )
    .assert_ok();
    let report = run.json();
    assert_eq!(report["outcome"], "written");
    let metadata = report["metadata_location"].as_str().unwrap().to_string();
    assert!(metadata.contains("/copy/wh/py/t/metadata/"), "{metadata}");
    let copied = without(&from, || {
        let (ok, v) = py_in(p.path(), "ice.py", &["static", &metadata, "--order", "id"]);
        assert!(ok, "{v}");
        v
    });
    assert_eq!(copied["checksum"], source["checksum"]);
    assert_eq!(copied["count"], 3);
    let paths: BTreeSet<String> = files(&copied);
    assert!(paths.iter().all(|f| f.contains("/copy/wh/")), "{paths:?}");
}

#[test]
fn an_incomplete_copy_or_a_foreign_target_is_refused_with_nothing_written() {
    let p = Project::new();
    load_source(&p, "id,region,name\n1,eu,a\n2,us,b\n");
    let (from, to) = (abs(&p, "src/wh"), abs(&p, "dr/wh"));
    copy(&from, &to);
    let (from_s, to_s) = (from.to_str().unwrap(), to.to_str().unwrap());
    let target = "sqlite://dr/catalog.db#s.t";

    // A prefix that matches nothing.
    relocate(
        &p,
        &[
            "sqlite://src/catalog.db#s.t",
            "--from",
            "/nowhere/wh",
            "--to",
            to_s,
        ],
    )
    .assert_failed()
    .stderr_has("matches nothing");

    // A data file missing at the new place, and one of another size.
    let data: Vec<PathBuf> = walk(&to.join("s/t/data"));
    assert!(data.len() >= 2, "{data:?}");
    std::fs::remove_file(&data[0]).unwrap();
    std::fs::write(&data[1], b"truncated").unwrap();
    let args = [
        "sqlite://src/catalog.db#s.t",
        "--from",
        from_s,
        "--to",
        to_s,
        "--register-as",
        target,
    ];
    relocate(&p, &args)
        .assert_failed()
        .stderr_has("2 of the")
        .stderr_has("(missing)")
        .stderr_has("the manifest says")
        .stderr_has(data[0].file_name().unwrap().to_str().unwrap());
    assert_eq!(relocated_files(&to), 0, "nothing may be written");
    p.pipe(&["table", "history", "iceberg:sqlite://dr/catalog.db#s.t"])
        .assert_failed()
        .stderr_has("there is no Iceberg table");

    // With the copy complete, a dry run checks and writes nothing.
    copy(&from, &to);
    let run = relocate(&p, &[args.as_slice(), &["--dry-run", "--json"]].concat()).assert_ok();
    assert_eq!(run.json()["outcome"], "dry-run");
    assert_eq!(relocated_files(&to), 0);

    // A target table that exists and is not a relocation of this source.
    p.write(
        "other.toml",
        "name = \"other\"\n[source]\ntype = \"file\"\npath = \"a.csv\"\n[destination]\n\
         type = \"iceberg\"\ncatalog = { type = \"sql\", uri = \"sqlite://dr/catalog.db\", \
         warehouse = \"dr/other\" }\ntable = \"s.t\"\n",
    );
    p.pipe(&["run", "other.toml"]).assert_ok();
    relocate(&p, &args)
        .assert_failed()
        .stderr_has("is not a relocation of");
    let (ok, v) = py_in(p.path(), "ice.py", &["read", "dr/catalog.db", "wh", "s.t"]);
    assert!(ok, "{v}");
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1);
}

#[test]
fn a_relocated_table_registers_in_a_rest_catalog_and_takes_new_snapshots_through_it() {
    use common::catalog::{Flavour, TOKEN};
    let p = Project::new();
    let append = load_source(&p, "id,region,name\n1,eu,a\n2,us,b\n");
    // The copy goes inside the REST catalog's warehouse (`wh`), where it registers tables.
    let (from, to) = (abs(&p, "src/wh"), abs(&p, "wh/dr"));
    copy(&from, &to);
    let (uri, reader) = p.rest(Flavour::Pipe, |c| (c.uri(), c.reader()));
    let target = format!("{uri}#dr.t");
    let args = [
        "iceberg",
        "relocate",
        "sqlite://src/catalog.db#s.t",
        "--from",
        from.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--register-as",
        target.as_str(),
        "--json",
    ];
    let env = [("PIPE_CATALOG_TOKEN", TOKEN)];
    let run = p.pipe_env(&args, &env).assert_ok();
    assert_eq!(run.json()["outcome"], "registered", "{}", run.stdout);
    let read_rest = || {
        let (ok, v) = py_in(
            p.path(),
            "ice.py",
            &["read", &reader, "wh", "dr.t", "--order", "id"],
        );
        assert!(ok, "pyiceberg through REST: {v}");
        v
    };
    let copied = without(&from, read_rest);
    assert_eq!(copied["count"], 2);

    // A schema change and a new snapshot at the source reach the copy as REST updates.
    p.write("a.csv", "id,region,name,score\n3,eu,c,30\n");
    p.pipe(&["run", &append]).assert_ok();
    copy(&from, &to);
    let run = p.pipe_env(&args, &env).assert_ok();
    assert_eq!(run.json()["outcome"], "committed", "{}", run.stdout);
    let source = read_at(&p, "src/catalog.db", None);
    let copied = without(&from, read_rest);
    assert_eq!(copied["count"], 3);
    assert_eq!(copied["checksum"], source["checksum"]);
    assert_eq!(copied["schema"], source["schema"]);
    assert_eq!(copied["current"], source["current"]);
}

#[test]
fn a_table_copied_to_s3_relocates_there_and_reads_through_the_object_store() {
    let p = Project::new();
    let append = load_source(&p, "id,region,name\n1,eu,a\n2,us,b\n3,eu,c\n");
    p.write("a.csv", "id,region,name\n4,us,d\n");
    p.pipe(&["run", &append]).assert_ok();
    let source = read_at(&p, "src/catalog.db", None);
    let s3 = p.s3();
    let from = abs(&p, "src/wh");
    // The replication: every file of the warehouse uploaded under s3://lake/dr/.
    let upload = "import boto3, os, sys\n\
                  s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n\
                  root = sys.argv[1]\n\
                  for d, _, names in os.walk(root):\n\
                  \x20   for n in names:\n\
                  \x20       f = os.path.join(d, n)\n\
                  \x20       s3.upload_file(f, 'lake', 'dr/' + os.path.relpath(f, root))";
    let status = Command::new(common::python())
        .args(["-c", upload, from.to_str().unwrap()])
        .envs(s3.env())
        .status()
        .unwrap();
    assert!(status.success());
    let options: Vec<String> = s3
        .pyiceberg_props()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    let mut args = vec![
        "iceberg",
        "relocate",
        "sqlite://src/catalog.db#s.t",
        "--from",
        from.to_str().unwrap(),
        "--to",
        "s3://lake/dr",
        "--register-as",
        "sqlite://dr/catalog.db#s.t",
        "--json",
    ];
    for o in &options {
        args.extend(["--storage-option", o.as_str()]);
    }
    let run = p.pipe(&args).assert_ok();
    assert_eq!(run.json()["outcome"], "registered", "{}", run.stdout);
    assert!(
        s3.keys("dr/s/t/metadata/")
            .iter()
            .any(|k| k.contains(".relocated-")),
        "relocated manifests are written next to the copies"
    );
    let mut props = s3.pyiceberg_props();
    props.insert("type".into(), "sql".into());
    props.insert(
        "uri".into(),
        format!("sqlite:///{}", abs(&p, "dr/catalog.db").display()).into(),
    );
    let catalog = Value::Object(props).to_string();
    let copied = without(&from, || read_at(&p, &catalog, None));
    assert_eq!(copied["checksum"], source["checksum"]);
    assert_eq!(copied["snapshots"].as_array().unwrap().len(), 2);
    for f in files(&copied) {
        assert!(f.starts_with("s3://lake/dr/"), "{f}");
    }
}

#[test]
fn a_relocated_table_registers_in_a_hive_metastore_and_follows_the_source() {
    let p = Project::new();
    let append = load_source(&p, "id,region,name\n1,eu,a\n2,us,b\n");
    let (from, to) = (abs(&p, "src/wh"), abs(&p, "dr/wh"));
    copy(&from, &to);
    let hms = common::hms::uri();
    let table = format!("{}.t", p.hive_db());
    let target = format!("{hms}#{table}");
    let args = [
        "sqlite://src/catalog.db#s.t",
        "--from",
        from.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--register-as",
        target.as_str(),
        "--json",
    ];
    let report = relocate(&p, &args).assert_ok().json();
    assert_eq!(report["outcome"], "registered", "{report}");
    let reader = json!({"type": "hive", "uri": hms}).to_string();
    let read_hive = || {
        let (ok, v) = py_in(
            p.path(),
            "ice.py",
            &["read", &reader, "wh", &table, "--order", "id"],
        );
        assert!(ok, "pyiceberg through the metastore: {v}");
        v
    };
    assert_eq!(without(&from, read_hive)["count"], 2);

    p.write("a.csv", "id,region,name\n3,eu,c\n");
    p.pipe(&["run", &append]).assert_ok();
    copy(&from, &to);
    let report = relocate(&p, &args).assert_ok().json();
    assert_eq!(report["outcome"], "committed", "{report}");
    let source = read_at(&p, "src/catalog.db", None);
    let copied = without(&from, read_hive);
    assert_eq!(copied["checksum"], source["checksum"]);
    assert_eq!(copied["current"], source["current"]);
}
