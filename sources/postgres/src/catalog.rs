//! What the server knows before any data moves: the read's columns and types (so the
//! metadata stage can create the table first), and how to split a read for parallelism.

use sqlx::Row;
use sqlx::postgres::PgConnection;

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

/// `schema.table` → `"schema"."table"`.
pub(crate) fn table_sql(table: &str) -> String {
    table.split('.').map(ident).collect::<Vec<_>>().join(".")
}

const DESCRIBE_VIEW: &str = "pipe_describe";

/// Columns and (base) types of `select`, read from the catalog through a temporary view, in a
/// transaction that is rolled back: nothing is left behind.
pub(crate) async fn describe(
    conn: &mut PgConnection,
    ep: &Endpoint,
    select: &str,
) -> Result<Vec<(String, String, TypeInfo)>, PgError> {
    let mut tx = sqlx::Connection::begin(&mut *conn)
        .await
        .map_err(|e| ep.err("starting a transaction", e))?;
    sqlx::query(&format!("CREATE TEMP VIEW {DESCRIBE_VIEW} AS {select}"))
        .execute(&mut *tx)
        .await
        .map_err(|e| ep.err("reading the columns of the source", e))?;
    let rows = sqlx::query(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), bt.oid::int8, \
                CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END, \
                bt.typname::text, bt.typtype::text, et.oid::int8, et.typname::text, et.typtype::text \
         FROM pg_attribute a \
         JOIN pg_type t ON t.oid = a.atttypid \
         JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
         LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A' \
         WHERE a.attrelid = 'pg_temp.pipe_describe'::regclass AND a.attnum > 0 \
           AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| ep.err("reading the catalog", e))?;
    tx.rollback()
        .await
        .map_err(|e| ep.err("ending the describe transaction", e))?;
    rows.iter()
        .map(|r| {
            let get = |e: sqlx::Error| ep.err("reading the catalog", e);
            let typmod: i32 = r.try_get(3).map_err(get)?;
            let element = match r.try_get::<Option<i64>, _>(6).map_err(get)? {
                Some(oid) => Some(Box::new(TypeInfo {
                    oid: oid as u32,
                    typmod,
                    name: r
                        .try_get::<Option<String>, _>(7)
                        .map_err(get)?
                        .unwrap_or_default(),
                    typtype: r
                        .try_get::<Option<String>, _>(8)
                        .map_err(get)?
                        .unwrap_or_default(),
                    element: None,
                })),
                None => None,
            };
            let info = TypeInfo {
                oid: r.try_get::<i64, _>(2).map_err(get)? as u32,
                typmod,
                name: r.try_get(4).map_err(get)?,
                typtype: r.try_get(5).map_err(get)?,
                element,
            };
            Ok((r.try_get(0).map_err(get)?, r.try_get(1).map_err(get)?, info))
        })
        .collect()
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
    .bind(table_sql(table))
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
    .bind(table_sql(table))
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

/// Conditions splitting a table's pages into `n` `ctid` ranges (the last one open-ended).
pub(crate) fn ctid_ranges(pages: i64, n: usize) -> Vec<String> {
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
        assert_eq!(ctid_ranges(0, 4), vec!["(ctid >= '(0,0)'::tid)"]);
    }

    #[test]
    fn quoting() {
        assert_eq!(table_sql("public.Orders"), "\"public\".\"Orders\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
