//! Table operations on DuckDB: the history is the run ledger (`_pipe.runs`, committed in the
//! same transaction as each run's rows), inspect reads the catalog. DuckDB keeps no older
//! versions of a table, so there is no time travel, vacuum or restore; `optimize` is DuckDB's
//! own business (it compacts on checkpoint).

use duckdb::Connection;
use pipe_framework::{ColumnInfo, CommitInfo, Error, Result, TableInfo};

use crate::database::read_connection;
use crate::error::{DuckError, sql_err};
use crate::table::{TableName, exists};
use crate::types::literal;
use crate::worker::ConnectionOptions;

/// Whether `_pipe.runs` has column `column` (added by later releases).
fn ledger_has(conn: &Connection, column: &str) -> std::result::Result<bool, DuckError> {
    let n: i64 = conn
        .query_row(
            &format!(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = '_pipe' \
                 AND table_name = 'runs' AND column_name = {}",
                literal(column)
            ),
            [],
            |r| r.get(0),
        )
        .map_err(|e| sql_err("reading the run ledger", e))?;
    Ok(n > 0)
}

/// The ledger's commits into `table`, newest first.
fn ledger(
    conn: &Connection,
    table: &TableName,
    limit: Option<usize>,
) -> std::result::Result<Vec<CommitInfo>, DuckError> {
    if !ledger_has(conn, "run_id")? {
        return Ok(Vec::new());
    }
    let rows_after = if ledger_has(conn, "table_rows")? {
        "table_rows"
    } else {
        "NULL::BIGINT"
    };
    let limit = limit.map_or_else(String::new, |n| format!(" LIMIT {n}"));
    let sql = format!(
        "SELECT run_id, pipeline, mode, epoch_ms(committed_at), rows_read, rows_inserted, \
         rows_updated, rows_deleted, {rows_after} FROM _pipe.runs WHERE lower(table_name) = {} \
         ORDER BY committed_at DESC, run_id DESC{limit}",
        literal(&table.key())
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| sql_err("reading the run ledger", e))?;
    let rows = stmt
        .query_map([], |r| {
            let count = |i: usize| {
                r.get::<_, Option<i64>>(i)
                    .map(|v| v.map(|n| n.max(0) as u64))
            };
            let mut summary = std::collections::BTreeMap::new();
            for (i, key) in [
                (4, "rows_read"),
                (5, "rows_inserted"),
                (6, "rows_updated"),
                (7, "rows_deleted"),
            ] {
                if let Some(n) = count(i)? {
                    summary.insert(key.to_string(), n.to_string());
                }
            }
            Ok(CommitInfo {
                id: r.get(0)?,
                pipeline: Some(r.get(1)?),
                run_id: Some(r.get(0)?),
                operation: r.get(2)?,
                timestamp: r
                    .get::<_, Option<i64>>(3)?
                    .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                rows: count(8)?,
                summary,
                ..CommitInfo::default()
            })
        })
        .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| sql_err("reading the run ledger", e))?;
    let mut commits = rows;
    if let Some(newest) = commits.first_mut() {
        newest.current = true;
    }
    Ok(commits)
}

/// The table's columns as DuckDB's catalog lists them.
fn columns(
    conn: &Connection,
    table: &TableName,
) -> std::result::Result<Vec<ColumnInfo>, DuckError> {
    let sql = format!(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_catalog = {} AND lower(table_schema) = lower({}) \
         AND lower(table_name) = lower({}) ORDER BY ordinal_position",
        literal(&table.catalog),
        literal(&table.schema),
        literal(&table.table)
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| sql_err("reading the table's columns", e))?;
    stmt.query_map([], |r| {
        Ok(ColumnInfo {
            name: r.get(0)?,
            r#type: r.get(1)?,
            id: None,
            required: r.get::<_, String>(2)? == "NO",
        })
    })
    .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
    .map_err(|e| sql_err("reading the table's columns", e))
}

/// Run `f` on a read connection to the database at `path` (none: the file does not exist).
async fn with_connection<T: Send + 'static>(
    path: &std::path::Path,
    options: &ConnectionOptions,
    table: &TableName,
    f: impl FnOnce(&Connection, &TableName) -> std::result::Result<T, DuckError> + Send + 'static,
) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let (path, options, mut table) = (path.to_path_buf(), options.clone(), table.clone());
    tokio::task::spawn_blocking(move || {
        let read = read_connection(&path, &options)?;
        table.catalog = read
            .conn
            .query_row("SELECT current_database()", [], |r| r.get(0))
            .map_err(|e| sql_err("reading the database name", e))?;
        f(&read.conn, &table).map(Some)
    })
    .await
    .map_err(|e| Error::internal(format!("duckdb task: {e}")))?
    .map_err(Error::from)
}

/// The table's commits (runs), newest first.
pub(crate) async fn history(
    path: &std::path::Path,
    options: &ConnectionOptions,
    table: &TableName,
    limit: Option<usize>,
) -> Result<Vec<CommitInfo>> {
    let missing = || {
        Error::user(format!(
            "there is no DuckDB table {table} in {}",
            path.display()
        ))
    };
    let commits = with_connection(path, options, table, move |conn, table| {
        if !exists(conn, table)? {
            return Ok(None);
        }
        ledger(conn, table, limit).map(Some)
    })
    .await?;
    commits.flatten().ok_or_else(missing)
}

/// The table now (DuckDB has no older versions).
pub(crate) async fn inspect(
    path: &std::path::Path,
    options: &ConnectionOptions,
    table: &TableName,
    at: Option<&str>,
) -> Result<Option<TableInfo>> {
    if let Some(at) = at {
        return Err(Error::user(format!(
            "DuckDB keeps no earlier versions of a table, so it cannot be inspected at `{at}`"
        )));
    }
    let file = path.display().to_string();
    let bytes = std::fs::metadata(path).ok().map(|m| m.len());
    with_connection(path, options, table, move |conn, table| {
        if !exists(conn, table)? {
            return Ok(None);
        }
        let rows: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {}", table.sql()), [], |r| {
                r.get(0)
            })
            .map_err(|e| sql_err("counting rows", e))?;
        let mut commits = ledger(conn, table, None)?;
        commits.reverse();
        let properties = std::collections::BTreeMap::from([
            ("database".to_string(), file),
            (
                "database-bytes".to_string(),
                bytes.map_or_else(String::new, |b| b.to_string()),
            ),
        ]);
        Ok(Some(TableInfo {
            table: table.to_string(),
            location: Some(path_display(table)),
            columns: columns(conn, table)?,
            properties,
            rows: Some(rows.max(0) as u64),
            files: None,
            bytes: None,
            commits,
        }))
    })
    .await
    .map(Option::flatten)
}

fn path_display(table: &TableName) -> String {
    format!("{}.{}.{}", table.catalog, table.schema, table.table)
}
