//! What the server knows before any data moves: the read's columns and types (so the
//! metadata stage can create the table first), and how to split a read for parallelism.

use sqlx::postgres::PgConnection;
use sqlx::{Column, Executor, Row};

use crate::connect::Endpoint;
use crate::error::PgError;
use crate::types::TypeInfo;

/// Quote an identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote a string literal.
pub(crate) fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A `table` as the server resolved it.
#[derive(Debug, Clone)]
pub(crate) struct Relation {
    /// The quoted, qualified-as-needed name (`public."Orders"`), as PostgreSQL prints it.
    pub sql: String,
    /// `pg_class.relkind`: `r` table, `p` partitioned, `v` view, `m` matview, `f` foreign.
    pub kind: String,
}

/// Resolve a configured table name the way PostgreSQL does (`public.orders`,
/// `"Mixed Case"`, search path), so quoting and case follow the server's rules.
pub(crate) async fn relation(
    conn: &mut PgConnection,
    ep: &Endpoint,
    table: &str,
) -> Result<Relation, PgError> {
    let row = sqlx::query(
        "SELECT c.oid::regclass::text, c.relkind::text FROM pg_class c WHERE c.oid = $1::regclass",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| ep.err("looking up the table", e))?;
    let err = |e| ep.err("looking up the table", e);
    Ok(Relation {
        sql: row.try_get(0).map_err(err)?,
        kind: row.try_get(1).map_err(err)?,
    })
}

/// Columns and types of `select`, from the server's description of the prepared statement
/// (no temporary objects: works on read replicas). The statement is only parsed, never run;
/// a `where` that smuggles in a second statement fails here.
pub(crate) async fn describe(
    conn: &mut PgConnection,
    ep: &Endpoint,
    select: &str,
) -> Result<Vec<(String, String, TypeInfo)>, PgError> {
    let described = conn
        .describe(select)
        .await
        .map_err(|e| ep.err("describing the read", e))?;
    let mut out = Vec::with_capacity(described.columns.len());
    for column in &described.columns {
        let oid = column.type_info().oid().map(|o| o.0).ok_or_else(|| {
            PgError::Protocol(format!("column `{}` has no type oid", column.name()))
        })?;
        // The typmod (numeric precision) is only known for columns taken from a table.
        let typmod = match (column.relation_id(), column.relation_attribute_no()) {
            (Some(rel), Some(att)) if rel.0 != 0 => sqlx::query_scalar::<_, i32>(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = $1 AND attnum = $2",
            )
            .bind(rel.0 as i64)
            .bind(att)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| ep.err("reading the catalog", e))?
            .unwrap_or(-1),
            _ => -1,
        };
        let type_name: String = sqlx::query_scalar("SELECT format_type($1::int8::oid, $2)")
            .bind(i64::from(oid))
            .bind(typmod)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| ep.err("reading the catalog", e))?;
        let info = resolve_type(conn, ep, oid, typmod).await?;
        out.push((column.name().to_string(), type_name, info));
    }
    Ok(out)
}

/// A type with domains resolved to their base types (recursively), and array elements.
async fn resolve_type(
    conn: &mut PgConnection,
    ep: &Endpoint,
    oid: u32,
    typmod: i32,
) -> Result<TypeInfo, PgError> {
    let (mut oid, mut typmod) = (oid, typmod);
    for _ in 0..16 {
        let row = sqlx::query(
            "SELECT typname::text, typtype::text, typbasetype::int8, typtypmod, typelem::int8,              typcategory::text FROM pg_type WHERE oid = $1::int8::oid",
        )
        .bind(i64::from(oid))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| ep.err("reading the catalog", e))?;
        let err = |e| ep.err("reading the catalog", e);
        let name: String = row.try_get(0).map_err(err)?;
        let typtype: String = row.try_get(1).map_err(err)?;
        if typtype == "d" {
            let domain_typmod: i32 = row.try_get(3).map_err(err)?;
            oid = row.try_get::<i64, _>(2).map_err(err)? as u32;
            if domain_typmod != -1 {
                typmod = domain_typmod;
            }
            continue;
        }
        let elem: i64 = row.try_get(4).map_err(err)?;
        let category: String = row.try_get(5).map_err(err)?;
        let element = if category == "A" && elem != 0 {
            Some(Box::new(
                Box::pin(resolve_type(conn, ep, elem as u32, typmod)).await?,
            ))
        } else {
            None
        };
        return Ok(TypeInfo {
            oid,
            typmod,
            name,
            typtype,
            element,
        });
    }
    Err(PgError::Protocol(format!(
        "type {oid}: domains nested too deeply"
    )))
}

/// The single-column primary key of `table`, if it has one.
pub(crate) async fn primary_key(
    conn: &mut PgConnection,
    ep: &Endpoint,
    table: &str,
) -> Result<Option<String>, PgError> {
    let rows = sqlx::query(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = $1::regclass AND i.indisprimary",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| ep.err("reading the primary key", e))?;
    Ok(match rows.as_slice() {
        [one] => Some(
            one.try_get(0)
                .map_err(|e| ep.err("reading the primary key", e))?,
        ),
        _ => None,
    })
}

/// The table's size in pages, for `ctid` ranges.
pub(crate) async fn pages(
    conn: &mut PgConnection,
    ep: &Endpoint,
    table: &str,
) -> Result<i64, PgError> {
    sqlx::query_scalar(
        "SELECT (pg_relation_size($1::regclass) / current_setting('block_size')::int8)::int8",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| ep.err("reading the table size", e))
}

/// `min` and `max` of an integer column over the rows a read would see.
pub(crate) async fn bounds(
    conn: &mut PgConnection,
    ep: &Endpoint,
    column: &str,
    from_where: &str,
) -> Result<Option<(i64, i64)>, PgError> {
    let sql = format!(
        "SELECT min({0})::int8, max({0})::int8 {from_where}",
        ident(column)
    );
    let row = sqlx::query(&sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| ep.err("reading the partition column's range", e))?;
    let min: Option<i64> = row.try_get(0).map_err(|e| ep.err("reading bounds", e))?;
    let max: Option<i64> = row.try_get(1).map_err(|e| ep.err("reading bounds", e))?;
    Ok(min.zip(max))
}

/// Conditions splitting an integer column's `[min, max]` into `n` ranges; NULLs go to the
/// first.
pub(crate) fn integer_ranges(column: &str, min: i64, max: i64, n: usize) -> Vec<String> {
    let c = ident(column);
    let span = (i128::from(max) - i128::from(min) + 1).max(1);
    let n = (n as i128).clamp(1, span);
    let step = (span + n - 1) / n;
    (0..n)
        .map(|i| {
            let lo = i128::from(min) + i * step;
            let range = if i == n - 1 {
                format!("{c} >= {lo}")
            } else {
                format!("{c} >= {lo} AND {c} < {}", lo + step)
            };
            if i == 0 {
                format!("(({range}) OR {c} IS NULL)")
            } else {
                format!("({range})")
            }
        })
        .collect()
}

/// Conditions splitting a table's pages into `n` `ctid` ranges (the last one open-ended); one
/// condition for a small table.
pub(crate) fn ctid_ranges(pages: i64, n: usize) -> Vec<String> {
    if pages <= 1 {
        return vec!["TRUE".into()];
    }
    let n = (n as i64).clamp(1, pages.max(1));
    let step = (pages.max(1) + n - 1) / n;
    (0..n)
        .map(|i| {
            let lo = i * step;
            if i == n - 1 {
                format!("(ctid >= '({lo},0)'::tid)")
            } else {
                format!(
                    "(ctid >= '({lo},0)'::tid AND ctid < '({},0)'::tid)",
                    lo + step
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ranges_cover_everything_once() {
        let r = integer_ranges("id", 1, 10, 3);
        assert_eq!(
            r,
            vec![
                "((\"id\" >= 1 AND \"id\" < 5) OR \"id\" IS NULL)",
                "(\"id\" >= 5 AND \"id\" < 9)",
                "(\"id\" >= 9)"
            ]
        );
        assert_eq!(integer_ranges("id", 7, 7, 4).len(), 1);
    }

    #[test]
    fn ctid_ranges_end_open() {
        assert_eq!(
            ctid_ranges(10, 2),
            vec![
                "(ctid >= '(0,0)'::tid AND ctid < '(5,0)'::tid)",
                "(ctid >= '(5,0)'::tid)"
            ]
        );
        assert_eq!(ctid_ranges(0, 4), vec!["TRUE"]);
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
