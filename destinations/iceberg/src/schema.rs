//! Arrow ↔ Iceberg schemas: the table type of every source column, new tables' schemas with
//! field ids, and schema evolution under the pipeline's policy.

use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema as ArrowSchema, TimeUnit};
use iceberg::spec::{
    ListType, MapType, MappedField, NameMapping, NestedField, NestedFieldRef, PrimitiveType,
    Schema, StructType, Type,
};
use pipe_framework::SchemaEvolution;
use pipe_framework::evolution::{SchemaChange, TypeRules, plan_evolution};

use crate::error::{IcebergError, Result, ice};

/// Arrow's extension name for UUIDs stored as `FixedSizeBinary(16)`.
const UUID_EXTENSION: &str = "arrow.uuid";
const EXTENSION_KEY: &str = "ARROW:extension:name";
/// The time zone Iceberg's `timestamptz` values are in.
const UTC: &str = "+00:00";

/// The Arrow type a source type is stored as, before any Iceberg field ids: the canonical
/// Arrow rendering of its Iceberg type (strings → `Utf8`, binaries → `LargeBinary`, timestamps
/// → microseconds, any time zone → `+00:00`, small integers → `Int32`, nested children
/// without metadata). Errors for types Iceberg cannot store.
pub(crate) fn table_type(column: &str, dt: &DataType) -> Result<DataType> {
    use DataType::*;
    let unsupported = |why: &str| {
        IcebergError::Config(format!(
            "column `{column}`: Arrow type {dt} cannot be stored in Iceberg{why}"
        ))
    };
    Ok(match dt {
        Null => {
            return Err(unsupported(
                " (a column of only NULLs has no type; cast it in the source)",
            ));
        }
        Boolean => Boolean,
        Int8 | Int16 | Int32 | UInt8 | UInt16 => Int32,
        Int64 | UInt32 => Int64,
        UInt64 => return Err(unsupported(" (use Int64 or Decimal(20, 0))")),
        Float16 | Float32 => Float32,
        Float64 => Float64,
        Decimal32(p, s) | Decimal64(p, s) => Decimal128(*p, *s),
        Decimal128(p, s) if *p <= 38 => Decimal128(*p, *s),
        Date32 | Date64 => Date32,
        Time32(_) | Time64(_) => Time64(TimeUnit::Microsecond),
        Timestamp(_, None) => Timestamp(TimeUnit::Microsecond, None),
        Timestamp(_, Some(_)) => Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        Utf8 | LargeUtf8 | Utf8View => Utf8,
        Binary | LargeBinary | BinaryView => LargeBinary,
        FixedSizeBinary(n) => FixedSizeBinary(*n),
        Dictionary(_, value) => table_type(column, value)?,
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) | FixedSizeList(f, _) => {
            List(Arc::new(table_field(column, f)?))
        }
        Struct(fields) => Struct(
            fields
                .iter()
                .map(|f| table_field(column, f))
                .collect::<Result<Fields>>()?,
        ),
        Map(entries, sorted) => Map(Arc::new(table_field(column, entries)?), *sorted),
        _ => return Err(unsupported("")),
    })
}

/// [`table_type`] of a field, keeping its name, nullability and the UUID marker.
fn table_field(column: &str, f: &Field) -> Result<Field> {
    let field = Field::new(
        f.name(),
        table_type(column, f.data_type())?,
        f.is_nullable(),
    );
    Ok(if is_uuid(f) {
        field.with_metadata([(EXTENSION_KEY.to_string(), UUID_EXTENSION.to_string())].into())
    } else {
        field
    })
}

fn is_uuid(f: &Field) -> bool {
    f.metadata().get(EXTENSION_KEY).map(String::as_str) == Some(UUID_EXTENSION)
        && matches!(f.data_type(), DataType::FixedSizeBinary(16))
}

/// The source schema as the table would store it ([`table_type`] of every column).
pub(crate) fn table_arrow_schema(source: &ArrowSchema) -> Result<ArrowSchema> {
    let fields = source
        .fields()
        .iter()
        .map(|f| table_field(f.name(), f))
        .collect::<Result<Vec<_>>>()?;
    Ok(ArrowSchema::new(fields))
}

/// Iceberg fields for Arrow `fields`, with ids from `next_id` upwards.
fn iceberg_fields(fields: &Fields, next_id: &mut i32) -> Result<Vec<NestedFieldRef>> {
    // Ids of one struct's fields first, then their children (Iceberg's assignment order).
    let ids: Vec<i32> = fields
        .iter()
        .map(|_| {
            *next_id += 1;
            *next_id
        })
        .collect();
    fields
        .iter()
        .zip(ids)
        .map(|(f, id)| {
            let ty = iceberg_type(f, next_id)?;
            Ok(Arc::new(NestedField::new(
                id,
                f.name(),
                ty,
                !f.is_nullable(),
            )))
        })
        .collect()
}

fn iceberg_type(f: &Field, next_id: &mut i32) -> Result<Type> {
    let column = f.name();
    Ok(match f.data_type() {
        DataType::Struct(children) => {
            Type::Struct(StructType::new(iceberg_fields(children, next_id)?))
        }
        DataType::List(element) => {
            *next_id += 1;
            let id = *next_id;
            let ty = iceberg_type(element, next_id)?;
            Type::List(ListType::new(Arc::new(NestedField::list_element(
                id,
                ty,
                !element.is_nullable(),
            ))))
        }
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(IcebergError::Config(format!(
                    "column `{column}`: map entries must be a struct"
                )));
            };
            let (Some(k), Some(v)) = (kv.first(), kv.get(1)) else {
                return Err(IcebergError::Config(format!(
                    "column `{column}`: map entries need a key and a value"
                )));
            };
            let (key_id, value_id) = (*next_id + 1, *next_id + 2);
            *next_id += 2;
            let key = iceberg_type(k, next_id)?;
            let value = iceberg_type(v, next_id)?;
            Type::Map(MapType::new(
                Arc::new(NestedField::map_key_element(key_id, key)),
                Arc::new(NestedField::map_value_element(
                    value_id,
                    value,
                    !v.is_nullable(),
                )),
            ))
        }
        _ if is_uuid(f) => Type::Primitive(PrimitiveType::Uuid),
        other => iceberg::arrow::arrow_type_to_type(other)
            .map_err(ice(format!("column `{column}`: converting its type")))?,
    })
}

/// The Iceberg schema for a new table from the source's Arrow schema (ids from 1;
/// `TableMetadataBuilder` assigns the final ids).
pub(crate) fn new_table_schema(source: &ArrowSchema) -> Result<Schema> {
    let arrow = table_arrow_schema(source)?;
    let mut next_id = 0;
    let fields = iceberg_fields(arrow.fields(), &mut next_id)?;
    Schema::builder()
        .with_fields(fields)
        .build()
        .map_err(ice("building the table schema"))
}

/// The Arrow schema every batch written to the table has: the Iceberg schema rendered by the
/// iceberg crate, field ids included.
pub(crate) fn write_schema(schema: &Schema) -> Result<ArrowSchema> {
    iceberg::arrow::schema_to_arrow_schema(schema).map_err(ice("converting the table schema"))
}

/// `dt` without nested field metadata, for comparing types.
pub(crate) fn bare(dt: &DataType) -> DataType {
    let field = |f: &FieldRef| -> FieldRef {
        Arc::new(Field::new(f.name(), bare(f.data_type()), f.is_nullable()))
    };
    match dt {
        DataType::List(f) => DataType::List(field(f)),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(field).collect()),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        other => other.clone(),
    }
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    match (table_type("", a), table_type("", b)) {
        (Ok(a), Ok(b)) => bare(&a) == bare(&b),
        _ => false,
    }
}

/// Whether the Iceberg spec allows widening a column from `from` to `to` in place.
fn iceberg_widening(from: &DataType, to: &DataType) -> bool {
    match (from, to) {
        (DataType::Int32, DataType::Int64) | (DataType::Float32, DataType::Float64) => true,
        (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) => s1 == s2 && p2 >= p1,
        _ => false,
    }
}

/// The table's schema after fitting `source` under `policy`: `None` when unchanged, else the
/// new schema (new columns get fresh ids, widened columns keep theirs).
pub(crate) fn evolve(
    current: &Schema,
    last_column_id: i32,
    source: &ArrowSchema,
    policy: SchemaEvolution,
) -> Result<Option<Schema>> {
    let table = write_schema(current)?;
    let source = table_arrow_schema(&pipe_framework::evolution::fill_null_types(source, &table))?;
    let rules = TypeRules {
        same_type: &same_type,
        case_insensitive_names: false,
    };
    let plan = plan_evolution(&table, &source, policy, rules)?;
    if plan.changes.is_empty() {
        return Ok(None);
    }
    let mut fields: Vec<NestedFieldRef> = current.as_struct().fields().to_vec();
    // Never reuse an id, not even one of a column another engine dropped.
    let mut next_id = last_column_id.max(current.highest_field_id());
    for change in &plan.changes {
        match change {
            SchemaChange::AddColumn(f) => {
                let mut added = iceberg_fields(&Fields::from(vec![f.clone()]), &mut next_id)?;
                fields.append(&mut added);
                tracing::info!(column = %f.name(), "adding column");
            }
            SchemaChange::WidenColumn { name, from, to } => {
                let (from, to) = (table_type(name, from)?, table_type(name, to)?);
                if !iceberg_widening(&from, &to) {
                    return Err(IcebergError::Config(format!(
                        "column `{name}` would have to change from {from} to {to}, which Iceberg \
                         does not allow in place (only int → long, float → double and a larger \
                         decimal precision); nothing was written"
                    )));
                }
                let ty = iceberg::arrow::arrow_type_to_type(&to)
                    .map_err(ice(format!("column `{name}`: converting its type")))?;
                for slot in fields.iter_mut().filter(|f| &f.name == name) {
                    let mut widened = slot.as_ref().clone();
                    widened.field_type = Box::new(ty.clone());
                    *slot = Arc::new(widened);
                }
                tracing::info!(column = %name, r#type = %to, "widening column");
            }
        }
    }
    let schema = Schema::builder()
        .with_schema_id(current.schema_id() + 1)
        .with_fields(fields)
        .with_identifier_field_ids(current.identifier_field_ids())
        .build()
        .map_err(ice("building the evolved schema"))?;
    Ok(Some(schema))
}

/// Names of `schema`'s top-level columns matching `wanted` (exact, else case-insensitive).
pub(crate) fn resolve_columns(schema: &Schema, wanted: &[String], what: &str) -> Result<Vec<i32>> {
    wanted
        .iter()
        .map(|w| {
            schema
                .field_by_name(w)
                .or_else(|| schema.field_by_name_case_insensitive(w))
                .filter(|f| schema.as_struct().fields().iter().any(|t| t.id == f.id))
                .map(|f| f.id)
                .ok_or_else(|| {
                    let names: Vec<&str> = schema
                        .as_struct()
                        .fields()
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect();
                    IcebergError::Config(format!(
                        "{what} `{w}` is not a column of the table; columns: {}",
                        names.join(", ")
                    ))
                })
        })
        .collect()
}

/// The name mapping (`schema.name-mapping.default`) of `schema`, as JSON: every field's id
/// under its current name, so readers match the columns of files written without Iceberg
/// field ids (registered files) by name.
pub(crate) fn name_mapping(schema: &Schema) -> String {
    fn mapped(field: &NestedField) -> MappedField {
        MappedField::new(
            Some(field.id),
            vec![field.name.clone()],
            children(&field.field_type),
        )
    }
    fn children(ty: &Type) -> Vec<MappedField> {
        match ty {
            Type::Struct(s) => s.fields().iter().map(|f| mapped(f)).collect(),
            Type::List(l) => vec![mapped(&l.element_field)],
            Type::Map(m) => vec![mapped(&m.key_field), mapped(&m.value_field)],
            Type::Primitive(_) => Vec::new(),
        }
    }
    let fields = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| mapped(f))
        .collect();
    serde_json::to_string(&NameMapping::new(fields)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_types_get_ids_and_uuid_is_kept() {
        let uuid = Field::new("u", DataType::FixedSizeBinary(16), true)
            .with_metadata([(EXTENSION_KEY.to_string(), UUID_EXTENSION.to_string())].into());
        let source = ArrowSchema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("tags", DataType::new_list(DataType::Utf8View, true), true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
            uuid,
        ]);
        let schema = new_table_schema(&source).expect("schema");
        let id = schema.field_by_name("id").expect("id");
        assert!(id.required);
        assert_eq!(
            *schema.field_by_name("u").expect("u").field_type,
            Type::Primitive(PrimitiveType::Uuid)
        );
        assert_eq!(
            *schema.field_by_name("ts").expect("ts").field_type,
            Type::Primitive(PrimitiveType::Timestamptz)
        );
        assert_eq!(schema.highest_field_id(), 5);
    }

    #[test]
    fn evolve_adds_columns_and_widens_only_what_iceberg_allows() {
        let v1 = ArrowSchema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("x", DataType::Float32, true),
        ]);
        let current = new_table_schema(&v1).expect("schema");
        let v2 = ArrowSchema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float32, true),
            Field::new("note", DataType::Utf8, true),
        ]);
        let evolved = evolve(&current, 2, &v2, SchemaEvolution::Evolve)
            .expect("evolve")
            .expect("changed");
        assert_eq!(
            *evolved.field_by_name("id").expect("id").field_type,
            Type::Primitive(PrimitiveType::Long)
        );
        assert_eq!(evolved.field_by_name("note").expect("note").id, 3);
        assert!(evolve(&current, 2, &v2, SchemaEvolution::Freeze).is_err());
        // another engine dropped columns 3..=7: the next column is 8, never a reused id
        let later = evolve(&current, 7, &v2, SchemaEvolution::Evolve)
            .expect("evolve")
            .expect("changed");
        assert_eq!(later.field_by_name("note").expect("note").id, 8);
        let v3 = ArrowSchema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("x", DataType::Float64, true),
        ]);
        assert!(evolve(&current, 2, &v3, SchemaEvolution::Evolve).is_ok());
        let v4 = ArrowSchema::new(vec![Field::new("id", DataType::Float64, false)]);
        assert!(evolve(&current, 2, &v4, SchemaEvolution::Evolve).is_err());
    }
}
