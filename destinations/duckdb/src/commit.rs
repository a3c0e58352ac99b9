//! The load stage's last step: merge staged rows (if merging), record the run in the ledger,
//! and commit — all in the run's one transaction.

use duckdb::Connection;
use pipe_framework::{CommitReport, CommitRequest, WriteMode};
use tracing::info;

use crate::error::{Result, sql_err};
use crate::quarantine;
use crate::table;
use crate::types::{ident, literal};
use crate::wire::SEQ_COLUMN;
use crate::worker::{Job, Prepared};

/// The merge staging table (a temp table: private to the connection, gone on disconnect).
pub(crate) const STAGE_TABLE: &str = "__pipe_stage";
const DEDUP_TABLE: &str = "__pipe_dedup";

/// The run ledger, committed in the same transaction as the data: after a crash, the table
/// and the ledger always agree.
const LEDGER_DDL: &str = "CREATE SCHEMA IF NOT EXISTS _pipe; \
    CREATE TABLE IF NOT EXISTS _pipe.runs (\
        pipeline VARCHAR NOT NULL, run_id VARCHAR NOT NULL, table_name VARCHAR NOT NULL, \
        mode VARCHAR NOT NULL, started_at TIMESTAMP WITH TIME ZONE, \
        committed_at TIMESTAMP WITH TIME ZONE, rows_read BIGINT, rows_inserted BIGINT, \
        rows_updated BIGINT, rows_deleted BIGINT, state VARCHAR); \
    CREATE TABLE IF NOT EXISTS _pipe.state (\
        pipeline VARCHAR NOT NULL, table_name VARCHAR NOT NULL, key VARCHAR NOT NULL, \
        value VARCHAR NOT NULL, run_id VARCHAR NOT NULL, committed_at TIMESTAMP WITH TIME ZONE, \
        seq BIGINT NOT NULL)";

/// The committed state of `pipeline` into `table`: per key, the value of the last run that
/// committed it (empty if none). Runs that changed other keys (a backfill window, say) never
/// hide a key's value.
pub(crate) fn committed_state(
    conn: &Connection,
    pipeline: &str,
    table: &str,
) -> Result<pipe_framework::State> {
    let tables = count(
        conn,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = '_pipe' \
         AND table_name = 'state'",
        "looking for the committed state",
    )?;
    if tables == 0 {
        return Ok(pipe_framework::State::new());
    }
    let sql = format!(
        "SELECT key, value FROM _pipe.state WHERE pipeline = {} AND table_name = {} \
         QUALIFY row_number() OVER (PARTITION BY key ORDER BY seq DESC, run_id DESC) = 1",
        literal(pipeline),
        literal(table)
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| sql_err("reading the committed state", e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| sql_err("reading the committed state", e))?;
    Ok(rows.into_iter().collect())
}

fn count(conn: &Connection, sql: &str, what: &str) -> Result<u64> {
    let n: i64 = conn
        .query_row(sql, [], |r| r.get(0))
        .map_err(|e| sql_err(what, e))?;
    Ok(n.max(0) as u64)
}

/// Finish the run: merge, ledger, COMMIT.
pub(crate) fn finish(
    conn: &Connection,
    job: &Job,
    prepared: &Prepared,
    staged: u64,
    request: &CommitRequest,
) -> Result<CommitReport> {
    let mode = job.request.write.mode;
    let mut report = CommitReport {
        rows_deleted: prepared.deleted,
        ..CommitReport::default()
    };
    match mode {
        WriteMode::Append | WriteMode::Replace => report.rows_inserted = staged,
        WriteMode::Merge => merge(conn, job, prepared, &mut report)?,
    }
    if let Some(q) = &request.quarantine {
        report.rows_quarantined = quarantine::write(conn, &job.table, &request.ctx.run_id, q)?;
    }
    conn.execute_batch(LEDGER_DDL)
        .map_err(|e| sql_err("creating the run ledger", e))?;
    let state = serde_json::to_string(&request.state).unwrap_or_else(|_| "{}".into());
    let ledger = format!(
        "INSERT INTO _pipe.runs VALUES ({}, {}, {}, {}, to_timestamp({}), now(), {}, {}, {}, {}, {})",
        literal(&request.ctx.pipeline),
        literal(&request.ctx.run_id),
        literal(&job.table.to_string()),
        literal(mode.as_str()),
        request.ctx.started_at.timestamp_micros() as f64 / 1e6,
        request.rows_read,
        report.rows_inserted,
        report.rows_updated,
        report.rows_deleted,
        literal(&state),
    );
    conn.execute_batch(&ledger)
        .map_err(|e| sql_err("recording the run", e))?;
    // Commit order, as a sequence inside the transaction (`now()` is the transaction's start
    // time, and clocks step): the last committed value of a key is the highest `seq`.
    for (key, value) in &request.state {
        let row = format!(
            "INSERT INTO _pipe.state SELECT {0}, {1}, {2}, {3}, {4}, now(), \
             coalesce(max(seq), 0) + 1 FROM _pipe.state WHERE pipeline = {0} AND table_name = {1}",
            literal(&request.ctx.pipeline),
            literal(&job.table.to_string()),
            literal(key),
            literal(value),
            literal(&request.ctx.run_id),
        );
        conn.execute_batch(&row)
            .map_err(|e| sql_err("recording the run's state", e))?;
    }
    conn.execute_batch("COMMIT")
        .map_err(|e| sql_err("committing", e))?;
    info!(table = %job.table, inserted = report.rows_inserted, updated = report.rows_updated,
          deleted = report.rows_deleted, "duckdb committed");
    Ok(report)
}

/// Upsert the staged rows on the merge keys. Duplicate keys within the run: the last staged
/// row wins. Rows whose values all equal the existing row are left untouched.
fn merge(
    conn: &Connection,
    job: &Job,
    prepared: &Prepared,
    report: &mut CommitReport,
) -> Result<()> {
    let target = &prepared.target;
    let keys = table::resolve_columns(target, &job.request.write.merge_keys, "the table")?;
    let source_cols: Vec<String> = job
        .request
        .source_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let all: Vec<String> = target.fields().iter().map(|f| f.name().clone()).collect();
    // Only columns the source has are updated; table-only columns keep their values.
    let updatable: Vec<&String> = all
        .iter()
        .filter(|c| !keys.contains(c) && source_cols.iter().any(|s| s.eq_ignore_ascii_case(c)))
        .collect();
    let key_list = keys.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let on = keys
        .iter()
        .map(|k| format!("t.{0} IS NOT DISTINCT FROM s.{0}", ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let dedup = format!(
        "CREATE OR REPLACE TEMP TABLE {DEDUP_TABLE} AS SELECT * EXCLUDE ({SEQ_COLUMN}) FROM {STAGE_TABLE} \
         QUALIFY row_number() OVER (PARTITION BY {key_list} ORDER BY {SEQ_COLUMN} DESC) = 1"
    );
    conn.execute_batch(&dedup)
        .map_err(|e| sql_err("deduplicating staged rows", e))?;
    let distinct = count(
        conn,
        &format!("SELECT count(*) FROM {DEDUP_TABLE}"),
        "counting staged rows",
    )?;
    report.rows_inserted = count(
        conn,
        &format!(
            "SELECT count(*) FROM {DEDUP_TABLE} s WHERE NOT EXISTS (SELECT 1 FROM {} t WHERE {on})",
            job.table.sql()
        ),
        "counting new keys",
    )?;
    let changed = if updatable.is_empty() {
        "false".to_string()
    } else {
        updatable
            .iter()
            .map(|c| format!("t.{0} IS DISTINCT FROM s.{0}", ident(c)))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    let set = updatable
        .iter()
        .map(|c| format!("{0} = s.{0}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let columns = all.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let values = all
        .iter()
        .map(|c| format!("s.{}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let update = if updatable.is_empty() {
        String::new()
    } else {
        format!("WHEN MATCHED AND ({changed}) THEN UPDATE SET {set} ")
    };
    let sql = format!(
        "MERGE INTO {} AS t USING {DEDUP_TABLE} AS s ON ({on}) {update}\
         WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})",
        job.table.sql()
    );
    let affected = conn
        .execute(&sql, [])
        .map_err(|e| sql_err("merging staged rows", e))? as u64;
    report.rows_updated = affected.saturating_sub(report.rows_inserted);
    report.rows_unchanged = distinct.saturating_sub(affected);
    conn.execute_batch(&format!(
        "DROP TABLE {STAGE_TABLE}; DROP TABLE {DEDUP_TABLE}"
    ))
    .map_err(|e| sql_err("dropping the staging tables", e))?;
    Ok(())
}
