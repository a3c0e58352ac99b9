//! What a read is, settled before any data moves: the relation, the columns and their types,
//! the cursor, and the conditions and partitions of one run.

use std::sync::Arc;

use arrow_schema::{Schema, SchemaRef};
use pipe_framework::{Result, Window};
use sqlx::postgres::PgConnection;

use crate::catalog::{self, Relation, ident, literal};
use crate::config::{PostgresConfig, Unsupported};
use crate::connect::Endpoint;
use crate::error::PgError;
use crate::incremental::{CursorKind, CursorState};
use crate::types::{PgColumn, PgKind, Unconstrained, field, kind_of};

/// The described read.
#[derive(Debug)]
pub(crate) struct Plan {
    pub schema: SchemaRef,
    pub kinds: Vec<PgKind>,
    /// The SELECT list (with `::text` casts for unsupported types read as text).
    pub projection: String,
    /// `FROM …`.
    pub from: String,
    /// The table, when reading one (for primary keys and `ctid` ranges).
    pub relation: Option<Relation>,
    /// The cursor column's index in the projection and its kind.
    pub cursor: Option<(usize, CursorKind)>,
    /// Indices of the primary key's columns, when the table has one and all are read:
    /// boundary rows are identified by them.
    pub key: Option<Vec<usize>>,
}

/// A `query` made safe to wrap in `FROM (…)`: no trailing `;`, and a line break before the
/// closing parenthesis so a trailing `--` comment cannot swallow it.
fn wrap_query(query: &str) -> String {
    let trimmed = query.trim().trim_end_matches(';').trim_end();
    format!("FROM (\n{trimmed}\n) AS pipe_q")
}

/// Describe the read `config` asks for.
pub(crate) async fn describe(
    conn: &mut PgConnection,
    ep: &Endpoint,
    config: &PostgresConfig,
    unconstrained: Unconstrained,
) -> Result<Plan> {
    let relation = match &config.table {
        Some(t) => Some(catalog::relation(conn, ep, t).await?),
        None => None,
    };
    let from = match (&relation, &config.query) {
        (Some(r), _) => format!("FROM {}", r.sql),
        (None, Some(q)) => wrap_query(q),
        (None, None) => return Err(PgError::Config("give `table` or `query`".into()).into()),
    };
    let list = match &config.columns {
        Some(cols) => cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "),
        None => "*".to_string(),
    };
    // Describing with the filter validates it too: one statement, columns that exist.
    let filter = config
        .filter
        .as_ref()
        .map(|w| format!(" WHERE ({w}\n)"))
        .unwrap_or_default();
    let described = catalog::describe(conn, ep, &format!("SELECT {list} {from}{filter}")).await?;
    let mut columns = Vec::with_capacity(described.len());
    for (name, type_name, info) in described {
        let kind = kind_of(&info, unconstrained).map_err(|m| PgError::Value {
            column: name.clone(),
            message: m,
        })?;
        columns.push(match (kind, config.unsupported_types) {
            (Some(kind), _) => PgColumn {
                name,
                kind,
                as_text: false,
            },
            (None, Unsupported::Text) => PgColumn {
                name,
                kind: PgKind::Text,
                as_text: true,
            },
            (None, Unsupported::Error) => {
                return Err(PgError::Unsupported {
                    column: name,
                    pg_type: type_name,
                }
                .into());
            }
        });
    }
    let position = |name: &str| columns.iter().position(|c| c.name == name);
    let cursor = match &config.cursor {
        None => None,
        Some(c) => {
            let i = position(c).ok_or_else(|| {
                PgError::Config(format!(
                    "cursor column `{c}` is not one of the columns read"
                ))
            })?;
            Some((i, CursorKind::of(c, &columns[i].kind)?))
        }
    };
    let key = match &relation {
        Some(r) => catalog::primary_key(conn, ep, &r.sql)
            .await?
            .iter()
            .map(|k| position(k))
            .collect::<Option<Vec<usize>>>()
            .filter(|k| !k.is_empty()),
        None => None,
    };
    let projection = columns
        .iter()
        .map(|c| {
            if c.as_text {
                format!("{0}::text AS {0}", ident(&c.name))
            } else {
                ident(&c.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| field(&c.name, &c.kind))
            .collect::<Vec<_>>(),
    ));
    Ok(Plan {
        schema,
        kinds: columns.into_iter().map(|c| c.kind).collect(),
        projection,
        from,
        relation,
        cursor,
        key,
    })
}

/// `WHERE` conditions every partition of a run shares: the user's filter, and the cursor's
/// range — a backfill window, or from the committed position (minus `lookback`, or from
/// `initial_value`) up to `end_value`.
/// The conditions of a read. `past_boundary`: the rows at the committed position are known
/// to be loaded already (their digest is unchanged), so the read starts after it.
pub(crate) fn conditions(
    config: &PostgresConfig,
    kind: Option<CursorKind>,
    previous: Option<&CursorState>,
    window: Option<&Window>,
    past_boundary: bool,
) -> Vec<String> {
    let mut conds = Vec::new();
    if let Some(w) = &config.filter {
        conds.push(format!("({w}\n)"));
    }
    let Some(c) = &config.cursor else {
        return conds;
    };
    let c = ident(c);
    if let Some(w) = window {
        conds.push(format!(
            "{c} >= {} AND {c} < {}",
            literal(&w.start),
            literal(&w.end)
        ));
        return conds;
    }
    match (previous, &config.lookback, &config.initial_value) {
        (Some(p), Some(lookback), _) => {
            let kind = kind.unwrap_or(CursorKind::Int);
            conds.push(format!(
                "{c} >= ({}::{} - {})",
                literal(&p.value),
                kind.sql_type(),
                lookback_sql(kind, lookback)
            ));
        }
        (Some(p), None, _) => {
            let op = if past_boundary { ">" } else { ">=" };
            conds.push(format!("{c} {op} {}", literal(&p.value)));
        }
        (None, _, Some(v)) => conds.push(format!("{c} >= {}", literal(v))),
        (None, _, None) => {}
    }
    if let Some(end) = &config.end_value {
        conds.push(format!("{c} < {}", literal(end)));
    }
    conds
}

fn lookback_sql(kind: CursorKind, lookback: &str) -> String {
    match kind {
        CursorKind::Int => lookback
            .parse::<i64>()
            .map_or_else(|_| literal(lookback), |n| n.to_string()),
        _ => format!("{}::interval", literal(lookback)),
    }
}

/// `WHERE …` from conditions plus one partition's.
pub(crate) fn where_clause(shared: &[String], partition: Option<&str>) -> String {
    let all: Vec<&str> = shared.iter().map(String::as_str).chain(partition).collect();
    if all.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", all.join(" AND "))
    }
}

/// One condition per partition (`TRUE` when reading on one connection).
pub(crate) async fn partitions(
    conn: &mut PgConnection,
    ep: &Endpoint,
    config: &PostgresConfig,
    plan: &Plan,
    shared: &[String],
) -> Result<Vec<String>> {
    let n = config.parallelism;
    if n <= 1 {
        return Ok(vec!["TRUE".into()]);
    }
    let column = match (&config.partition_column, &plan.key) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(key)) if key.len() == 1 => Some(plan.schema.field(key[0]).name().clone()),
        _ => None,
    };
    let integer = column.as_ref().and_then(|c| {
        let i = plan.schema.index_of(c).ok()?;
        matches!(plan.kinds[i], PgKind::Int2 | PgKind::Int4 | PgKind::Int8).then(|| c.clone())
    });
    if let Some(c) = integer {
        let from_where = format!("{} {}", plan.from, where_clause(shared, None));
        return Ok(match catalog::bounds(conn, ep, &c, &from_where).await? {
            Some((min, max)) => catalog::integer_ranges(&c, min, max, n),
            None => vec!["TRUE".into()],
        });
    }
    if let Some(c) = &config.partition_column {
        return Err(PgError::Config(format!(
            "`partition_column` `{c}` must be an integer column of the read"
        ))
        .into());
    }
    match &plan.relation {
        // ctid ranges need a plain (or materialized) table's heap.
        Some(r) if r.kind == "r" || r.kind == "m" => Ok(catalog::ctid_ranges(
            catalog::pages(conn, ep, &r.sql).await?,
            n,
        )),
        _ => Ok(vec!["TRUE".into()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_wrapped_safely() {
        assert_eq!(
            wrap_query("select 1 -- note"),
            "FROM (\nselect 1 -- note\n) AS pipe_q"
        );
        assert_eq!(wrap_query("select 1;;  "), "FROM (\nselect 1\n) AS pipe_q");
    }
}
