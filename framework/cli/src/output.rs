//! What `pipe` prints: progress, summaries, errors, listings.
//!
//! Output goes through [`out!`] and [`err!`], which ignore write errors: `pipe run … | head`
//! closing the pipe early must not turn into a panic.

/// `println!` that ignores a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema_display::describe_schema;
use indicatif::{ProgressBar, ProgressStyle};
use pipe_framework::registry::ComponentInfo;
use pipe_framework::{Error, Pipeline, RunProgress, RunStatus, RunSummary};
use tokio::sync::oneshot;

/// A live progress line: a bar on a terminal, an INFO log line every 10 s otherwise.
pub(crate) struct Progress {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub(crate) fn start(progress: Arc<RunProgress>) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let tty = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let bar = tty.then(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar
            });
            let period = if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(10)
            };
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let rows = progress.rows_read();
                let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
                let msg = format!("{} rows read, {} rows/s", group(rows), group(rate as u64));
                match &bar {
                    Some(b) => {
                        b.set_message(msg);
                        b.tick();
                    }
                    None => tracing::info!(rows, rows_per_second = rate as u64, "progress"),
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Self { stop, task }
    }

    pub(crate) async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// 1234567 → "1,234,567".
pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => out!("{s}"),
        Err(e) => err!("error: cannot serialize the summary: {e}"),
    }
}

pub(crate) fn print_summary(s: &RunSummary) {
    let nothing = s.commit.as_ref().is_some_and(|c| c.nothing_to_commit);
    let verdict = match s.status {
        RunStatus::Succeeded if nothing => "nothing to commit (no rows, no state change)",
        RunStatus::Succeeded => "committed",
        RunStatus::Failed => "FAILED, nothing committed",
        RunStatus::Cancelled => "CANCELLED, nothing committed",
        RunStatus::Unknown => "COMMIT OUTCOME UNKNOWN, files kept; the next run reconciles",
    };
    out!(
        "{}: {verdict} ({} → {}, mode {})",
        s.pipeline,
        s.run_id,
        s.destination,
        s.mode
    );
    let quarantined = if s.rows_quarantined > 0 {
        format!(" ({} quarantined)", group(s.rows_quarantined))
    } else {
        String::new()
    };
    out!(
        "  rows read {}, written {}, rejected {}{quarantined} | {} read | {:.2} s | {} rows/s",
        group(s.rows_read),
        group(s.rows_written),
        group(s.rows_rejected),
        bytes(s.bytes_read),
        s.seconds,
        group(s.rows_per_second as u64)
    );
    if let Some(c) = &s.commit {
        let discarded = if c.rows_discarded > 0 {
            format!(", discarded {}", group(c.rows_discarded))
        } else {
            String::new()
        };
        out!(
            "  inserted {}, updated {}, unchanged {}, deleted {}{discarded}",
            group(c.rows_inserted),
            group(c.rows_updated),
            group(c.rows_unchanged),
            group(c.rows_deleted)
        );
        for warning in &c.warnings {
            out!("  warning: {warning}");
        }
    }
    for warning in &s.warnings {
        out!("  warning: {warning}");
    }
    for stage in &s.stages {
        let rules = stage.detail.get("rules").and_then(|r| r.as_array());
        let Some(rules) = rules.filter(|r| !r.is_empty()) else {
            continue;
        };
        out!(
            "  {:<38} {:<10} {:>9} {:>12}",
            format!("{} rules", stage.stage),
            "action",
            "checked",
            "failed"
        );
        for rule in rules {
            print_rule(rule);
        }
    }
}

/// One rule of a contract report: rows checked and failed, or for a rule checked once on the
/// schema or per run, whether it held.
pub(crate) fn print_rule(rule: &serde_json::Value) {
    let text = |k: &str| rule.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let count = |k: &str| rule.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let (checked, failed) = match (text("level"), text("violation")) {
        ("row", _) => (group(count("rows_checked")), group(count("rows_failed"))),
        (level, "") => (level.to_string(), "ok".to_string()),
        (level, _) => (level.to_string(), "VIOLATED".to_string()),
    };
    let violation = match text("violation") {
        "" => String::new(),
        v => format!("  ({v})"),
    };
    out!(
        "    {:<36} {:<10} {checked:>9} {failed:>12}{violation}",
        text("rule"),
        text("on_violation"),
    );
}

/// `error: outer` followed by one `caused by:` line per cause.
pub(crate) fn print_error(e: &Error) {
    let chain = e.chain();
    err!("error: {}", chain.first().map_or("", String::as_str));
    for cause in chain.iter().skip(1) {
        err!("  caused by: {cause}");
    }
}

pub(crate) fn print_list(components: &[ComponentInfo], json: bool) {
    if json {
        print_json(&components);
        return;
    }
    for kind in ["source", "destination", "stage", "service"] {
        out!("{kind}s:");
        for c in components.iter().filter(|c| c.kind == kind) {
            let modes: Vec<&str> = c.modes.iter().map(|m| m.as_str()).collect();
            let modes = if modes.is_empty() {
                String::new()
            } else {
                format!(" [modes: {}]", modes.join(", "))
            };
            out!("  {:<10} {}{modes}", c.name, c.description);
        }
    }
}

pub(crate) fn print_validation(p: &Pipeline, schema: &arrow_schema::Schema, json: bool) {
    if json {
        print_json(&serde_json::json!({
            "pipeline": p.name,
            "valid": true,
            "source": p.source_type,
            "destination": p.destination.describe(),
            "mode": p.write.mode,
            "merge_keys": p.write.merge_keys,
            "schema_evolution": p.metadata.schema_evolution,
            "stages": p.stages.iter().map(|s| s.name().to_string()).collect::<Vec<_>>(),
            "columns": describe_schema(schema),
        }));
        return;
    }
    out!("{}: valid", p.name);
    out!(
        "  source       {} ({} columns)",
        p.source_type,
        schema.fields().len()
    );
    for (name, ty) in describe_schema(schema) {
        out!("    {name}: {ty}");
    }
    let stages: Vec<&str> = p.stages.iter().map(|s| s.name()).collect();
    out!(
        "  stages       {}",
        if stages.is_empty() {
            "-".into()
        } else {
            stages.join(", ")
        }
    );
    let keys = if p.write.merge_keys.is_empty() {
        String::new()
    } else {
        format!(" on [{}]", p.write.merge_keys.join(", "))
    };
    out!(
        "  destination  {} (reachable), mode {}{keys}",
        p.destination.describe(),
        p.write.mode
    );
}

mod arrow_schema_display {
    /// `(name, type)` of every column.
    pub(crate) fn describe_schema(schema: &arrow_schema::Schema) -> Vec<(String, String)> {
        schema
            .fields()
            .iter()
            .map(|f| {
                let null = if f.is_nullable() { "" } else { " not null" };
                (f.name().clone(), format!("{}{null}", f.data_type()))
            })
            .collect()
    }
}

pub(crate) fn print_window(window: &str, status: &str, rows: u64, error: Option<&str>) {
    match error {
        None => out!("  window {window}: {status}, {} rows", group(rows)),
        Some(e) => out!("  window {window}: {status}: {e}"),
    }
}

pub(crate) fn print_backfill(
    windows: usize,
    done: usize,
    committed: usize,
    failed: usize,
    rows: u64,
) {
    out!(
        "backfill: {windows} windows, {done} already committed, {committed} committed now, {failed} failed; {} rows",
        group(rows)
    );
}

pub(crate) fn print_status(
    pipeline: &str,
    store: &str,
    state: &std::collections::BTreeMap<String, String>,
    windows: usize,
    runs: &[pipe_framework::state::LedgerEntry],
) {
    out!("{pipeline} (state store {store})");
    for (key, value) in state {
        // Cursor states are JSON; show their position, not the boundary hashes.
        let shown = serde_json::from_str::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v.get("value").and_then(|x| x.as_str()).map(str::to_string))
            .unwrap_or_else(|| value.clone());
        out!("  {key} = {shown}");
    }
    out!("  backfill windows committed: {windows}");
    out!("  last runs:");
    for r in runs {
        let window = r
            .window
            .as_ref()
            .map(|w| format!(" [{w}]"))
            .unwrap_or_default();
        out!(
            "    {} {} {}{window}: {}, read {}, written {}{}",
            r.started_at,
            r.run_id,
            r.kind,
            r.status,
            group(r.rows_read.max(0) as u64),
            group(r.rows_written.max(0) as u64),
            r.error
                .as_ref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
    }
}

pub(crate) fn print_status_source(from: &str) {
    if from != "destination" {
        out!("note: committed state read from the {from}");
    }
}
