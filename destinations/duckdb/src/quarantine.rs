//! Quarantined rows, written inside the run's transaction just before it commits: the
//! quarantine table and the destination table change together or not at all.

use duckdb::Connection;
use pipe_framework::evolution::Aligner;
use pipe_framework::{Error, Quarantine, SchemaEvolution};
use tracing::info;

use crate::error::{DuckError, Result, sql_err};
use crate::stream::{self, Message, Registration};
use crate::table::{self, TableName};
use crate::types::literal;
use crate::wire;

/// Batches in flight between the spool reader and DuckDB's scan threads.
const CAPACITY: usize = 2;

/// The quarantine table: the one the contract names (a bare name goes in the destination
/// table's schema), else `<table>_quarantine` beside the destination table.
pub(crate) fn table_name(destination: &TableName, configured: Option<&str>) -> Result<TableName> {
    let mut name = match configured {
        Some(t) if !t.contains('.') => TableName {
            catalog: String::new(),
            schema: destination.schema.clone(),
            table: t.trim().to_string(),
        },
        Some(t) => TableName::parse(t).map_err(DuckError::Framework)?,
        None => TableName {
            catalog: String::new(),
            schema: destination.schema.clone(),
            table: format!("{}_quarantine", destination.table),
        },
    };
    name.catalog = destination.catalog.clone();
    if name.schema.eq_ignore_ascii_case(&destination.schema)
        && name.table.eq_ignore_ascii_case(&destination.table)
    {
        return Err(DuckError::Schema(format!(
            "the quarantine table cannot be the destination table {destination}"
        )));
    }
    Ok(name)
}

/// Create or evolve the quarantine table and insert every quarantined row; returns how many.
pub(crate) fn write(
    conn: &Connection,
    destination: &TableName,
    run_id: &str,
    quarantine: &Quarantine,
) -> Result<u64> {
    let name = table_name(destination, quarantine.table.as_deref())?;
    let target = table::create_or_evolve(conn, &name, &quarantine.schema, SchemaEvolution::Evolve)?;
    let aligner = Aligner::new(&quarantine.schema, target.clone()).map_err(DuckError::Framework)?;
    let streamed = wire::stream_schema(&target, false);
    let id = stream::unique_id(&format!("{run_id}-quarantine"));
    let (registration, data) = Registration::new(&id, streamed.clone(), CAPACITY);
    let batches = quarantine.batches().map_err(DuckError::Framework)?;
    // DuckDB's scan threads pull while this thread feeds them from the spool file.
    let feeder = std::thread::Builder::new()
        .name("pipe-duckdb-quarantine".into())
        .spawn(move || -> std::result::Result<(), Error> {
            for batch in batches {
                let batch = aligner.align(batch?)?;
                let batch = wire::to_stream(batch, &streamed, None)?;
                if data.blocking_send(Message::Batch(batch)).is_err() {
                    // The INSERT failed and closed the stream; its error is the one reported.
                    return Ok(());
                }
            }
            let _ = data.blocking_send(Message::End);
            Ok(())
        })
        .map_err(|e| DuckError::Worker(format!("cannot start the quarantine feeder: {e}")))?;
    let insert = format!(
        "INSERT INTO {} SELECT {} FROM {}({})",
        name.sql(),
        wire::select_list(&target, false),
        stream::FUNCTION,
        literal(&id)
    );
    let inserted = conn.execute(&insert, []);
    if inserted.is_err() {
        registration.stream().close();
    }
    let fed = feeder
        .join()
        .map_err(|_| DuckError::Worker("the quarantine feeder panicked".into()))?;
    drop(registration);
    let rows = inserted.map_err(|e| sql_err("writing the quarantined rows", e))? as u64;
    fed.map_err(DuckError::Framework)?;
    info!(table = %name, rows, "quarantined rows written");
    Ok(rows)
}
