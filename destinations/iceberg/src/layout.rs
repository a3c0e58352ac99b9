//! `partition_by` and `sort_order`: parsed against the new table's schema; and the key a
//! run's rows are clustered by.

use std::sync::Arc;

use arrow_schema::{Schema as ArrowSchema, SortOptions};
use iceberg::spec::{
    NullOrder, Schema, SortDirection, SortField, SortOrder, TableMetadata, Transform,
    UnboundPartitionSpec,
};
use pipe_framework::WriteSpec;
use pipe_framework::cluster::{self, SortKey};

use crate::error::{IcebergError, Result, ice};

/// One `partition_by` entry: a transform of a source column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartitionField {
    /// The source column.
    pub column: String,
    /// The transform.
    pub transform: Transform,
}

fn bad(entry: &str, why: &str) -> IcebergError {
    IcebergError::Config(format!(
        "partition_by entry `{entry}`: {why}; expected `column`, `year(col)`, `month(col)`, \
         `day(col)`, `hour(col)`, `bucket(N, col)` or `truncate(W, col)`"
    ))
}

/// Parse one `partition_by` entry.
pub(crate) fn parse_partition(entry: &str) -> Result<PartitionField> {
    let text = entry.trim();
    let Some(open) = text.find('(') else {
        if text.is_empty() || text.contains([')', ',', ' ']) {
            return Err(bad(entry, "not a column name"));
        }
        return Ok(PartitionField {
            column: text.to_string(),
            transform: Transform::Identity,
        });
    };
    let Some(inner) = text[open + 1..].strip_suffix(')') else {
        return Err(bad(entry, "missing `)`"));
    };
    let head = text[..open].trim().to_ascii_lowercase();
    // `bucket[16](col)` (Iceberg's spelling) or `bucket(16, col)` (Spark's).
    let (name, bracket_arg) = match head.split_once('[') {
        Some((name, rest)) => {
            let arg = rest
                .strip_suffix(']')
                .ok_or_else(|| bad(entry, "missing `]`"))?;
            (name.to_string(), Some(arg.trim().to_string()))
        }
        None => (head, None),
    };
    let args: Vec<&str> = inner.split(',').map(str::trim).collect();
    let (arg, column) = match (bracket_arg, args.as_slice()) {
        (Some(a), [col]) => (Some(a), *col),
        (None, [n, col]) => (Some(n.to_string()), *col),
        (None, [col]) => (None, *col),
        _ => return Err(bad(entry, "wrong number of arguments")),
    };
    if column.is_empty() {
        return Err(bad(entry, "no column"));
    }
    let number = |what: &str| -> Result<u32> {
        arg.as_deref()
            .and_then(|a| a.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(entry, &format!("{what} needs a positive integer")))
    };
    let transform = match (name.as_str(), &arg) {
        ("year" | "years", None) => Transform::Year,
        ("month" | "months", None) => Transform::Month,
        ("day" | "days", None) => Transform::Day,
        ("hour" | "hours", None) => Transform::Hour,
        ("identity", None) => Transform::Identity,
        ("bucket", Some(_)) => Transform::Bucket(number("bucket")?),
        ("truncate", Some(_)) => Transform::Truncate(number("truncate")?),
        _ => return Err(bad(entry, &format!("unknown transform `{name}`"))),
    };
    Ok(PartitionField {
        column: column.to_string(),
        transform,
    })
}

/// The partition field's name, as Java and pyiceberg name them.
fn partition_name(field: &PartitionField) -> String {
    let c = &field.column;
    match field.transform {
        Transform::Identity => c.clone(),
        Transform::Year => format!("{c}_year"),
        Transform::Month => format!("{c}_month"),
        Transform::Day => format!("{c}_day"),
        Transform::Hour => format!("{c}_hour"),
        Transform::Bucket(_) => format!("{c}_bucket"),
        Transform::Truncate(_) => format!("{c}_trunc"),
        _ => format!("{c}_{}", field.transform),
    }
}

/// The partition spec of a new table with `schema`.
pub(crate) fn partition_spec(schema: &Schema, entries: &[String]) -> Result<UnboundPartitionSpec> {
    let mut builder = UnboundPartitionSpec::builder();
    for entry in entries {
        let field = parse_partition(entry)?;
        let source = schema
            .field_by_name(&field.column)
            .ok_or_else(|| bad(entry, &format!("`{}` is not a column", field.column)))?;
        field.transform.result_type(&source.field_type).map_err(|e| {
            IcebergError::Config(format!(
                "partition_by entry `{entry}`: {} cannot be applied to column `{}` of type {}: {}",
                field.transform,
                field.column,
                source.field_type,
                e.message()
            ))
        })?;
        builder = builder
            .add_partition_field(source.id, partition_name(&field), field.transform)
            .map_err(ice(format!("partition_by entry `{entry}`")))?;
    }
    Ok(builder.build())
}

/// The sort order of a new table with `schema`: `col [asc|desc] [nulls first|nulls last]`.
pub(crate) fn sort_order(schema: &Schema, entries: &[String]) -> Result<Option<SortOrder>> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut builder = SortOrder::builder();
    builder.with_order_id(1);
    for entry in entries {
        let words: Vec<String> = entry
            .split_whitespace()
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let bad = |why: &str| {
            IcebergError::Config(format!(
                "sort_order entry `{entry}`: {why}; expected `column [asc|desc] [nulls first|nulls last]`"
            ))
        };
        let Some(column) = entry.split_whitespace().next() else {
            return Err(bad("empty"));
        };
        let source = schema
            .field_by_name(column)
            .ok_or_else(|| bad(&format!("`{column}` is not a column")))?;
        let mut direction = SortDirection::Ascending;
        let mut rest = &words[1..];
        if let Some(first) = rest.first() {
            match first.as_str() {
                "asc" => rest = &rest[1..],
                "desc" => {
                    direction = SortDirection::Descending;
                    rest = &rest[1..];
                }
                _ => {}
            }
        }
        let null_order = match rest {
            [] if direction == SortDirection::Ascending => NullOrder::First,
            [] => NullOrder::Last,
            [n, f] if n == "nulls" && f == "first" => NullOrder::First,
            [n, l] if n == "nulls" && l == "last" => NullOrder::Last,
            _ => return Err(bad("unexpected words")),
        };
        builder.with_sort_field(SortField {
            source_id: source.id,
            transform: Transform::Identity,
            direction,
            null_order,
        });
    }
    builder
        .build(schema)
        .map(Some)
        .map_err(ice("building the sort order"))
}

/// The key a run's rows are sorted by before they are written (`None`: written as they
/// come). The columns are `cluster_by`, else a merge's keys, else the table's sort order
/// ([`cluster::resolve`]); on a partitioned table they follow the source columns of its
/// order-preserving partition transforms (identity, year, month, day, hour, truncate), so
/// each segment of sorted rows falls into few partitions.
pub(crate) fn cluster_key(
    meta: &TableMetadata,
    write_schema: &ArrowSchema,
    cluster_by: Option<&[String]>,
    write: &WriteSpec,
) -> Result<Option<Arc<SortKey>>> {
    let schema = meta.current_schema();
    let mut declared: Vec<(String, SortOptions)> = Vec::new();
    for f in &meta.default_sort_order().fields {
        if f.transform != Transform::Identity {
            continue;
        }
        if let Some(field) = schema.field_by_id(f.source_id) {
            let options = SortOptions {
                descending: f.direction == SortDirection::Descending,
                nulls_first: f.null_order == NullOrder::First,
            };
            declared.push((field.name.clone(), options));
        }
    }
    let names: Vec<String> = declared.iter().map(|(n, _)| n.clone()).collect();
    let columns = cluster::resolve(cluster_by, write.mode, &write.merge_keys, &names);
    if columns.is_empty() {
        return Ok(None);
    }
    let mut key: Vec<(usize, SortOptions)> = Vec::new();
    let mut add = |name: &str, what: &str| -> Result<()> {
        let i = pipe_framework::columns::find(write_schema, name).ok_or_else(|| {
            IcebergError::Config(format!("{what} column `{name}` is not in the table"))
        })?;
        if !key.iter().any(|(k, _)| *k == i) {
            let options = declared
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(SortOptions::default, |(_, o)| *o);
            key.push((i, options));
        }
        Ok(())
    };
    for field in meta.default_partition_spec().fields() {
        let ordered = matches!(
            field.transform,
            Transform::Identity
                | Transform::Year
                | Transform::Month
                | Transform::Day
                | Transform::Hour
                | Transform::Truncate(_)
        );
        if let (true, Some(source)) = (ordered, schema.field_by_id(field.source_id)) {
            add(&source.name, "partition")?;
        }
    }
    for name in &columns {
        add(name, "cluster_by")?;
    }
    Ok(Some(SortKey::new(write_schema, &key)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_entries_parse_in_both_spellings() {
        let p = |s: &str| parse_partition(s).expect(s);
        assert_eq!(p("region").transform, Transform::Identity);
        assert_eq!(p("day(ts)").transform, Transform::Day);
        assert_eq!(p("bucket(16, id)").transform, Transform::Bucket(16));
        assert_eq!(p("bucket[16](id)").column, "id");
        assert_eq!(p("truncate[4](name)").transform, Transform::Truncate(4));
        assert!(parse_partition("bucket(id)").is_err());
        assert!(parse_partition("wobble(id)").is_err());
        assert!(parse_partition("day(ts").is_err());
    }
}
