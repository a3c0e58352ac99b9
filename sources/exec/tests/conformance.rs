//! The exec source through the framework's source conformance check, with `cat` replaying an
//! Arrow IPC stream (no Python needed), and a program that hangs being killed on cancel.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema};
use pipe_framework::conformance::check_source;
use pipe_framework::{ErrorKind, RunContext, Source, batch_channel};
use pipe_source_exec::{ExecConfig, ExecSource};

/// An IPC stream of `batches` batches of 1000 rows in `dir`; without its end marker unless
/// `finish`.
fn stream(dir: &std::path::Path, batches: i64, finish: bool) -> std::path::PathBuf {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Utf8, true),
    ]));
    let path = dir.join("data.arrows");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = StreamWriter::try_new(file, &schema).unwrap();
    for b in 0..batches {
        let ids: Vec<i64> = (b * 1000..(b + 1) * 1000).collect();
        let labels: Vec<String> = ids.iter().map(|i| format!("r{i}")).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(labels)),
            ],
        )
        .unwrap();
        writer.write(&batch).unwrap();
    }
    if finish {
        writer.finish().unwrap();
    } else {
        writer.flush().unwrap();
    }
    path
}

fn source(command: &[&str]) -> Arc<dyn Source> {
    let config: ExecConfig = toml::from_str(&format!(
        "command = [{}]",
        command
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .unwrap();
    Arc::new(ExecSource::new(config, "test").unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_stream_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = stream(dir.path(), 50, true);
    let seen = check_source(
        source(&["cat", path.to_str().unwrap()]),
        || RunContext::new("test"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!((seen.rows, seen.batches), (50_000, 50));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_program_is_killed_when_the_run_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let path = stream(dir.path(), 3, false);
    let pid_file = dir.path().join("pid");
    // Writes its stream without the end marker, then hangs (a child of its shell).
    let script = format!(
        "echo $$ > {pid}; cat {data}; sleep 3600",
        pid = pid_file.display(),
        data = path.display()
    );
    let source = source(&["sh", "-c", &script]);
    let ctx = RunContext::new("test");
    let schema = source.run_schema(&ctx).await.unwrap();
    let (tx, mut rx) = batch_channel(schema, 4);
    let reading = {
        let (source, ctx) = (source.clone(), ctx.clone());
        tokio::spawn(async move { source.read(&ctx, tx).await })
    };
    let first = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "a first batch");
    ctx.cancel.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .expect("the read returns once cancelled")
        .unwrap();
    assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Cancelled);
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let alive = std::process::Command::new("kill")
        .args(["-0", pid.trim()])
        .status()
        .unwrap()
        .success();
    assert!(!alive, "the program {pid} outlived its run");
    // Its `sleep` child went with the process group.
    let left = std::process::Command::new("pgrep")
        .args(["-g", pid.trim()])
        .output()
        .unwrap();
    // (A killed orphan may linger as a zombie until init reaps it: not running.)
    let running: Vec<String> = String::from_utf8_lossy(&left.stdout)
        .lines()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        })
        .map(str::to_string)
        .collect();
    assert!(
        running.is_empty(),
        "still running in the group: {running:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_program_is_a_user_error_with_its_stderr() {
    let err = check_source(
        source(&["sh", "-c", "echo 'no credentials for the API' >&2; exit 4"]),
        || RunContext::new("test"),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::User);
    let text = err.to_string();
    assert!(text.contains("no credentials for the API"), "{text}");
    assert!(text.contains("exit code 4"), "{text}");
}
