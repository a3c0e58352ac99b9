//! The metadata stage on DuckDB: create or evolve the target table inside the run's
//! transaction, and read back the Arrow schema batches must have.

use arrow_schema::{Schema, SchemaRef};
use duckdb::Connection;
use pipe_framework::evolution::{SchemaChange, TypeRules, plan_evolution};
use pipe_framework::{Error, SchemaEvolution};
use tracing::info;

use crate::error::{DuckError, Result, sql_err};
use crate::types::{duck_field_type, duck_type, ident, literal, same_type};

/// The schema of pipe's own tables (`_pipe.runs`, `_pipe.state`).
pub(crate) const INTERNAL_SCHEMA: &str = "_pipe";

/// `schema.table`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    /// The database (catalog) name, known once the file is open; empty before.
    pub catalog: String,
    pub schema: String,
    pub table: String,
}

impl TableName {
    pub(crate) fn parse(s: &str) -> std::result::Result<Self, Error> {
        let (schema, table) = match s.split_once('.') {
            Some((schema, table)) => (schema.trim(), table.trim()),
            None => ("main", s.trim()),
        };
        if schema.is_empty() || table.is_empty() || table.contains('.') {
            return Err(Error::user(format!(
                "`table` must be `schema.table` or `table`, got {s:?}"
            )));
        }
        // pipe's own tables: the run ledger and the committed state of every pipeline, and
        // the merge's temp tables. Writing them would lose other pipelines' cursors.
        if schema.eq_ignore_ascii_case(INTERNAL_SCHEMA)
            || table.to_ascii_lowercase().starts_with("__pipe_")
        {
            return Err(Error::user(format!(
                "`table` {s:?} is one of pipe's own tables (schema `{INTERNAL_SCHEMA}` holds \
                 every pipeline's ledger and committed state; `__pipe_*` are its staging \
                 tables): choose another name"
            )));
        }
        Ok(Self {
            catalog: String::new(),
            schema: schema.to_string(),
            table: table.to_string(),
        })
    }

    /// The table's identity in pipe's ledger and state: `schema.table` in lower case, since
    /// DuckDB's identifiers are case-insensitive (`sales.Orders` is `sales.orders`).
    pub(crate) fn key(&self) -> String {
        format!("{}.{}", self.schema, self.table).to_lowercase()
    }

    /// `"catalog"."schema"`: fully qualified, since a schema may share the database's name.
    pub(crate) fn schema_sql(&self) -> String {
        if self.catalog.is_empty() {
            ident(&self.schema)
        } else {
            format!("{}.{}", ident(&self.catalog), ident(&self.schema))
        }
    }

    /// `"catalog"."schema"."table"`.
    pub(crate) fn sql(&self) -> String {
        format!("{}.{}", self.schema_sql(), ident(&self.table))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Whether the table exists (names compare case-insensitively, like DuckDB's).
pub(crate) fn exists(conn: &Connection, name: &TableName) -> Result<bool> {
    let sql = format!(
        "SELECT count(*) FROM information_schema.tables WHERE lower(table_schema) = lower({}) \
         AND lower(table_name) = lower({}) AND table_catalog = {}",
        literal(&name.schema),
        literal(&name.table),
        literal(&name.catalog)
    );
    let n: i64 = conn
        .query_row(&sql, [], |r| r.get(0))
        .map_err(|e| sql_err("checking whether the table exists", e))?;
    Ok(n > 0)
}

/// The table's columns as the Arrow schema DuckDB exports for them, except that `UUID`
/// columns are Arrow's uuid extension type (`FixedSizeBinary(16)`), not text.
pub(crate) fn arrow_schema(conn: &Connection, name: &TableName) -> Result<SchemaRef> {
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {} LIMIT 0", name.sql()))
        .map_err(|e| sql_err("reading the table schema", e))?;
    let arrow = stmt
        .query_arrow([])
        .map_err(|e| sql_err("reading the table schema", e))?;
    let exported = arrow.get_schema();
    let sql = format!(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = {} \
         AND lower(table_schema) = lower({}) AND lower(table_name) = lower({}) \
         AND data_type = 'UUID'",
        literal(&name.catalog),
        literal(&name.schema),
        literal(&name.table)
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| sql_err("reading the column types", e))?;
    let uuids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<std::result::Result<Vec<String>, _>>())
        .map_err(|e| sql_err("reading the column types", e))?;
    if uuids.is_empty() {
        return Ok(exported);
    }
    let fields: Vec<arrow_schema::Field> = exported
        .fields()
        .iter()
        .map(|f| {
            if uuids.contains(f.name()) {
                arrow_schema::Field::new(
                    f.name(),
                    arrow_schema::DataType::FixedSizeBinary(16),
                    true,
                )
                .with_metadata(
                    [("ARROW:extension:name".to_string(), "arrow.uuid".to_string())].into(),
                )
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Ok(std::sync::Arc::new(Schema::new(fields)))
}

fn column_defs(schema: &Schema) -> Result<String> {
    let defs = schema
        .fields()
        .iter()
        .map(|f| {
            let t = duck_field_type(f)
                .map_err(|e| DuckError::Schema(format!("column `{}`: {e}", f.name())))?;
            Ok(format!("{} {t}", ident(f.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(defs.join(", "))
}

/// Create the table for `source`, or evolve it under `policy`; returns the schema every batch
/// must be converted to. Runs inside the caller's open transaction.
pub(crate) fn create_or_evolve(
    conn: &Connection,
    name: &TableName,
    source: &Schema,
    policy: SchemaEvolution,
) -> Result<SchemaRef> {
    conn.execute_batch(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        ident(&name.schema)
    ))
    .map_err(|e| sql_err("creating the schema", e))?;
    if !exists(conn, name)? {
        let mut seen = std::collections::HashSet::new();
        for f in source.fields() {
            if !seen.insert(f.name().to_lowercase()) {
                return Err(DuckError::Schema(format!(
                    "the source has two columns named `{}` (DuckDB column names ignore case)",
                    f.name()
                )));
            }
        }
        let sql = format!("CREATE TABLE {} ({})", name.sql(), column_defs(source)?);
        conn.execute_batch(&sql)
            .map_err(|e| sql_err("creating the table", e))?;
        info!(table = %name, columns = source.fields().len(), "table created");
        return arrow_schema(conn, name);
    }
    let current = arrow_schema(conn, name)?;
    let rules = TypeRules {
        same_type: &same_type,
        case_insensitive_names: true,
    };
    let plan = plan_evolution(&current, source, policy, rules).map_err(DuckError::Framework)?;
    for change in &plan.changes {
        let sql = match change {
            SchemaChange::AddColumn(f) => {
                let t = duck_field_type(f)
                    .map_err(|e| DuckError::Schema(format!("column `{}`: {e}", f.name())))?;
                info!(table = %name, column = %f.name(), r#type = %t, "adding column");
                format!(
                    "ALTER TABLE {} ADD COLUMN {} {t}",
                    name.sql(),
                    ident(f.name())
                )
            }
            SchemaChange::WidenColumn { name: col, to, .. } => {
                let t =
                    duck_type(to).map_err(|e| DuckError::Schema(format!("column `{col}`: {e}")))?;
                info!(table = %name, column = %col, r#type = %t, "widening column");
                format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET DATA TYPE {t}",
                    name.sql(),
                    ident(col)
                )
            }
        };
        conn.execute_batch(&sql)
            .map_err(|e| sql_err("evolving the table", e))?;
    }
    if plan.changes.is_empty() {
        Ok(current)
    } else {
        arrow_schema(conn, name)
    }
}

/// Names of `schema`'s columns matching `wanted` case-insensitively, in `schema`'s spelling;
/// `whose` names the schema in the error ("the table", "the source").
pub(crate) fn resolve_columns(
    schema: &Schema,
    wanted: &[String],
    whose: &str,
) -> Result<Vec<String>> {
    let found = pipe_framework::columns::resolve(schema, wanted, "merge key", whose)
        .map_err(|e| DuckError::Schema(e.message().to_string()))?;
    Ok(found
        .into_iter()
        .map(|i| schema.field(i).name().clone())
        .collect())
}
