//! The load stage's last step: merge staged rows (if merging), record the run in the ledger,
//! and commit — all in the run's one transaction.

use duckdb::Connection;
use pipe_framework::committed::state_to_commit;
use pipe_framework::{CommitReport, CommitRequest, WriteMode};
use tracing::info;

use crate::error::{DuckError, Result, sql_err};
use crate::quarantine;
use crate::table;
use crate::types::{ident, literal};
use crate::wire::SEQ_COLUMN;
use crate::worker::{Job, Prepared};

/// The merge staging table (a temp table: private to the connection, gone on disconnect).
pub(crate) const STAGE_TABLE: &str = "__pipe_stage";
const DEDUP_TABLE: &str = "__pipe_dedup";
const MATCHED_TABLE: &str = "__pipe_matched";
/// Column of [`MATCHED_TABLE`]: whether some table row with the key differs.
const CHANGED_COLUMN: &str = "__pipe_changed";

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
        seq BIGINT NOT NULL); \
    ALTER TABLE _pipe.runs ADD COLUMN IF NOT EXISTS table_rows BIGINT";

/// The committed state of `pipeline` into `table` (its [`crate::table::TableName::key`]): per
/// key, the value of the last run that committed it (empty if none). Runs that changed other
/// keys (a backfill window, say) never hide a key's value. Table names compare
/// case-insensitively, as DuckDB's identifiers do.
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
        "SELECT key, value FROM _pipe.state WHERE pipeline = {} AND lower(table_name) = {} \
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
    // The pipeline's state as the database holds it now (this transaction holds the
    // database's write lock, so no other run commits meanwhile): another run of the
    // pipeline may have committed since this one read its state.
    let current = committed_state(conn, &request.ctx.pipeline, &job.table.key())?;
    state_to_commit(&request.ctx, &current, &request.state).map_err(DuckError::Framework)?;
    let mut report = CommitReport {
        rows_deleted: prepared.deleted,
        ..CommitReport::default()
    };
    match mode {
        // (`register` is refused when the run is prepared.)
        WriteMode::Append | WriteMode::Replace | WriteMode::Register => {
            report.rows_inserted = staged
        }
        WriteMode::Merge => merge(conn, job, prepared, &mut report)?,
    }
    if let Some(q) = &request.quarantine {
        report.rows_quarantined = quarantine::write(conn, &job.table, &request.ctx.run_id, q)?;
    }
    conn.execute_batch(LEDGER_DDL)
        .map_err(|e| sql_err("creating the run ledger", e))?;
    let state = serde_json::to_string(&request.state).unwrap_or_else(|_| "{}".into());
    let table_rows = count(
        conn,
        &format!("SELECT count(*) FROM {}", job.table.sql()),
        "counting the table's rows",
    )?;
    let ledger = format!(
        "INSERT INTO _pipe.runs (pipeline, run_id, table_name, mode, started_at, committed_at, \
         rows_read, rows_inserted, rows_updated, rows_deleted, state, table_rows) \
         VALUES ({}, {}, {}, {}, to_timestamp({}), now(), {}, {}, {}, {}, {}, {table_rows})",
        literal(&request.ctx.pipeline),
        literal(&request.ctx.run_id),
        literal(&job.table.key()),
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
             coalesce(max(seq), 0) + 1 FROM _pipe.state WHERE pipeline = {0} \
             AND lower(table_name) = {1}",
            literal(&request.ctx.pipeline),
            literal(&job.table.key()),
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
/// row wins. Rows whose values all equal the existing row (bit for bit: `-0.0` is not `0.0`)
/// are left untouched; changed rows are deleted and inserted again, since DuckDB's UPDATE,
/// MERGE and `IS DISTINCT FROM` treat `0.0` and `-0.0` as equal and would keep the old sign.
/// Table columns the source lacks keep their values.
fn merge(
    conn: &Connection,
    job: &Job,
    prepared: &Prepared,
    report: &mut CommitReport,
) -> Result<()> {
    let target = &prepared.target;
    let keys = table::resolve_columns(target, &job.request.write.merge_keys, "the table")?;
    let source = &job.request.source_schema;
    let in_source = |c: &str| {
        source
            .fields()
            .iter()
            .any(|s| s.name().eq_ignore_ascii_case(c))
    };
    let key_list = keys.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let on = keys
        .iter()
        .map(|k| format!("t.{0} IS NOT DISTINCT FROM s.{0}", ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let table = job.table.sql();
    // One row per key, the last staged; its sequence number identifies it.
    run(
        conn,
        &format!(
            "CREATE OR REPLACE TEMP TABLE {DEDUP_TABLE} AS SELECT * FROM {STAGE_TABLE} \
             QUALIFY row_number() OVER (PARTITION BY {key_list} ORDER BY {SEQ_COLUMN} DESC) = 1"
        ),
        "deduplicating staged rows",
    )?;
    // Incoming keys that match table rows: whether any matching row differs, and the values
    // of the columns only the table has (kept when the row is rewritten).
    let differs = target
        .fields()
        .iter()
        .filter(|f| !keys.contains(f.name()) && in_source(f.name()))
        .map(|f| differs(f))
        .collect::<Vec<_>>();
    let changed = if differs.is_empty() {
        "false".to_string()
    } else {
        differs.join(" OR ")
    };
    let kept: Vec<&str> = target
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|c| !in_source(c))
        .collect();
    let kept_values: String = kept
        .iter()
        .map(|c| format!(", any_value(t.{0}) AS {0}", ident(c)))
        .collect();
    run(
        conn,
        &format!(
            "CREATE OR REPLACE TEMP TABLE {MATCHED_TABLE} AS SELECT s.{SEQ_COLUMN}, \
             bool_or({changed}) AS {CHANGED_COLUMN}{kept_values} FROM {DEDUP_TABLE} s \
             JOIN {table} t ON ({on}) GROUP BY s.{SEQ_COLUMN}"
        ),
        "matching staged rows with the table",
    )?;
    let distinct = count(
        conn,
        &format!("SELECT count(*) FROM {DEDUP_TABLE}"),
        "counting staged rows",
    )?;
    let matched = count(
        conn,
        &format!("SELECT count(*) FROM {MATCHED_TABLE}"),
        "counting matched keys",
    )?;
    report.rows_updated = count(
        conn,
        &format!("SELECT count(*) FROM {MATCHED_TABLE} WHERE {CHANGED_COLUMN}"),
        "counting changed rows",
    )?;
    report.rows_inserted = distinct.saturating_sub(matched);
    report.rows_unchanged = matched.saturating_sub(report.rows_updated);
    if report.rows_updated > 0 {
        run(
            conn,
            &format!(
                "DELETE FROM {table} t USING {DEDUP_TABLE} s, {MATCHED_TABLE} m \
                 WHERE m.{CHANGED_COLUMN} AND m.{SEQ_COLUMN} = s.{SEQ_COLUMN} AND {on}"
            ),
            "removing the changed rows' old versions",
        )?;
    }
    let columns = target
        .fields()
        .iter()
        .map(|f| ident(f.name()))
        .collect::<Vec<_>>()
        .join(", ");
    let values = target
        .fields()
        .iter()
        .map(|f| {
            let side = if in_source(f.name()) { "s" } else { "m" };
            format!("{side}.{}", ident(f.name()))
        })
        .collect::<Vec<_>>()
        .join(", ");
    run(
        conn,
        &format!(
            "INSERT INTO {table} ({columns}) SELECT {values} FROM {DEDUP_TABLE} s \
             LEFT JOIN {MATCHED_TABLE} m ON m.{SEQ_COLUMN} = s.{SEQ_COLUMN} \
             WHERE m.{SEQ_COLUMN} IS NULL OR m.{CHANGED_COLUMN}"
        ),
        "writing new and changed rows",
    )?;
    run(
        conn,
        &format!("DROP TABLE {STAGE_TABLE}; DROP TABLE {DEDUP_TABLE}; DROP TABLE {MATCHED_TABLE}"),
        "dropping the staging tables",
    )
}

/// SQL: whether column `field` of the table row `t` differs from the incoming row `s`, bit
/// for bit: floats compare their sign too (`0.0` vs `-0.0`), and nested values holding floats
/// compare as text. NaN equals NaN.
fn differs(field: &arrow_schema::Field) -> String {
    let c = ident(field.name());
    let dt = field.data_type();
    if dt.is_floating() {
        format!(
            "(t.{c} IS DISTINCT FROM s.{c} OR (t.{c} = 0 AND signbit(t.{c}) <> signbit(s.{c})))"
        )
    } else if dt.is_nested() && holds_float(dt) {
        format!("(CAST(t.{c} AS VARCHAR) IS DISTINCT FROM CAST(s.{c} AS VARCHAR))")
    } else {
        format!("t.{c} IS DISTINCT FROM s.{c}")
    }
}

fn holds_float(dt: &arrow_schema::DataType) -> bool {
    use arrow_schema::DataType as D;
    match dt {
        D::Float16 | D::Float32 | D::Float64 => true,
        D::List(f)
        | D::LargeList(f)
        | D::FixedSizeList(f, _)
        | D::ListView(f)
        | D::LargeListView(f)
        | D::Map(f, _) => holds_float(f.data_type()),
        D::Struct(fields) => fields.iter().any(|f| holds_float(f.data_type())),
        _ => false,
    }
}

fn run(conn: &Connection, sql: &str, what: &str) -> Result<()> {
    conn.execute_batch(sql).map_err(|e| sql_err(what, e))
}
