//! The partition a registered file belongs to: from its column statistics (the transform of
//! the minimum equals that of the maximum), or from a Hive-style `name=value` directory in
//! its path — and refused when neither tells, or when the file spans several partitions.

use iceberg::spec::{Datum, Literal, PartitionSpec, PrimitiveType, Schema, Struct, Type};
use iceberg::transform::create_transform_function;

use super::footer::Stats;
use crate::error::{IcebergError, Result, ice};

/// The value Hive writes for a NULL partition.
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// `location`'s partition under `spec`.
pub(crate) fn partition_of(
    spec: &PartitionSpec,
    schema: &Schema,
    stats: &Stats,
    rows: u64,
    location: &str,
) -> Result<Struct> {
    if spec.is_unpartitioned() {
        return Ok(Struct::empty());
    }
    let types = spec
        .partition_type(schema)
        .map_err(ice("the table's partition type"))?;
    let mut values = Vec::new();
    for (field, result) in spec.fields().iter().zip(types.fields()) {
        let source = schema.field_by_id(field.source_id).ok_or_else(|| {
            IcebergError::Config(format!(
                "partition field `{}` has no source column",
                field.name
            ))
        })?;
        let transform =
            create_transform_function(&field.transform).map_err(ice("a partition transform"))?;
        let apply = |d: &Datum| {
            transform
                .transform_literal(d)
                .map_err(ice("computing a partition value"))
        };
        let from_stats: Option<Option<Datum>> = {
            let nulls = stats.null_counts.get(&source.id).copied();
            match (stats.lower.get(&source.id), stats.upper.get(&source.id)) {
                (Some(lo), Some(hi)) => {
                    let (a, b) = (apply(lo)?, apply(hi)?);
                    if a != b || nulls.is_some_and(|n| n > 0) {
                        return Err(IcebergError::Config(format!(
                            "{location} spans several partitions of `{}` (its `{}` values \
                             run from {lo} to {hi}{}); register only files of one partition",
                            field.name,
                            source.name,
                            if nulls.is_some_and(|n| n > 0) {
                                ", and NULLs"
                            } else {
                                ""
                            }
                        )));
                    }
                    Some(a)
                }
                _ if nulls == Some(rows) && rows > 0 => Some(None),
                _ => None,
            }
        };
        let names = [field.name.as_str(), source.name.as_str()];
        let from_path = match path_value(location, &names) {
            Some(text) => Some(parse(&text, &result.field_type).ok_or_else(|| {
                IcebergError::Config(format!(
                    "{location}: `{text}` in the path is not a {} value of partition `{}`",
                    result.field_type, field.name
                ))
            })?),
            None => None,
        };
        let value = match (from_stats, from_path) {
            (Some(s), Some(p)) if s != p => {
                return Err(IcebergError::Config(format!(
                    "{location}: its path says partition `{}` is {}, but its rows say {}",
                    field.name,
                    show(&p),
                    show(&s)
                )));
            }
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => {
                return Err(IcebergError::Config(format!(
                    "{location}: cannot tell its partition `{}`: column `{}` has no min/max \
                     statistics in the file and the path has no `{}=<value>` directory",
                    field.name, source.name, field.name
                )));
            }
        };
        values.push(value.map(Literal::from));
    }
    Ok(Struct::from_iter(values))
}

fn show(v: &Option<Datum>) -> String {
    v.as_ref().map_or("NULL".into(), |d| d.to_string())
}

/// The value of the last `name=value` path segment whose name is one of `names`,
/// URL-decoded as Hive and Iceberg encode it.
fn path_value(location: &str, names: &[&str]) -> Option<String> {
    let dirs = location.rsplit_once('/').map_or("", |(dirs, _)| dirs);
    dirs.split('/').rev().find_map(|segment| {
        let (name, value) = segment.split_once('=')?;
        let name = decode(name);
        names.contains(&name.as_str()).then(|| decode(value))
    })
}

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// A partition value as a path writes it; `Some(None)` for NULL.
fn parse(text: &str, ty: &Type) -> Option<Option<Datum>> {
    if text == HIVE_NULL || text == "null" {
        return Some(None);
    }
    let Type::Primitive(p) = ty else {
        return None;
    };
    let datum = match p {
        PrimitiveType::String => Datum::string(text),
        PrimitiveType::Int => Datum::int(text.parse::<i32>().ok()?),
        PrimitiveType::Long => Datum::long(text.parse::<i64>().ok()?),
        PrimitiveType::Boolean => Datum::bool(text.parse::<bool>().ok()?),
        PrimitiveType::Date => Datum::date_from_str(text).ok()?,
        _ => return None,
    };
    Some(Some(datum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_style_directories_give_values() {
        let loc = "s3://b/wh/region=eu%2Fwest/day=2024-01-02/part-0.parquet";
        assert_eq!(path_value(loc, &["region"]).as_deref(), Some("eu/west"));
        assert_eq!(path_value(loc, &["day"]).as_deref(), Some("2024-01-02"));
        assert_eq!(path_value(loc, &["other"]), None);
        assert_eq!(path_value("/x/a=1.parquet", &["a"]), None);
        assert_eq!(
            parse("2024-01-02", &Type::Primitive(PrimitiveType::Date)),
            Some(Some(Datum::date_from_str("2024-01-02").unwrap()))
        );
        assert_eq!(
            parse(HIVE_NULL, &Type::Primitive(PrimitiveType::Int)),
            Some(None)
        );
        assert_eq!(parse("x", &Type::Primitive(PrimitiveType::Int)), None);
    }
}
