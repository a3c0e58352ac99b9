//! Hive-style partition directories (`region=eu/day=2024-01-01`): which column types can
//! partition, how values are spelled in paths, and the split of a batch into its partitions.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch, UInt32Array};
use arrow_cast::cast;
use arrow_schema::{DataType, Schema};
use pipe_framework::{Error, Result};

/// The directory name Hive, Spark, pyarrow and DuckDB use for a NULL (or empty) value.
pub(crate) const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Whether a column of `t` can partition: its values have one plain text form.
pub(crate) fn partitionable(t: &DataType) -> bool {
    t.is_integer()
        || matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Date32
                | DataType::Boolean
        )
}

/// The indexes of `names` in `schema`, refusing missing columns and types without a plain
/// text form.
pub(crate) fn resolve(schema: &Schema, names: &[String]) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|name| {
            let i = pipe_framework::columns::find(schema, name).ok_or_else(|| {
                Error::user(format!("partition_by column `{name}` is not in the table"))
            })?;
            let t = schema.field(i).data_type();
            if !partitionable(t) {
                return Err(Error::user(format!(
                    "partition_by column `{name}` has type {t}; files partition by integer, \
                     string, date or boolean columns (derive a day or month column first)"
                )));
            }
            Ok(i)
        })
        .collect()
}

/// `value` escaped as Hive escapes path names: `%XX` for the characters a path or a
/// `key=value` pair cannot hold.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let special = c.is_control()
            || matches!(
                c,
                '"' | '#'
                    | '%'
                    | '\''
                    | '*'
                    | '/'
                    | ':'
                    | '='
                    | '?'
                    | '\\'
                    | '{'
                    | '['
                    | ']'
                    | '^'
                    | '\u{7f}'
            );
        if special {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits batches of the table's schema into `(partition directory, rows without the
/// partition columns)`.
#[derive(Debug, Clone)]
pub(crate) struct Splitter {
    /// Partition column indexes and names, in directory order.
    columns: Vec<(usize, String)>,
    /// The columns written into the files.
    keep: Vec<usize>,
}

impl Splitter {
    /// For `schema` partitioned by the columns at `partition` (empty: no partitions).
    pub(crate) fn new(schema: &Schema, partition: &[usize]) -> Self {
        Self {
            columns: partition
                .iter()
                .map(|&i| (i, schema.field(i).name().clone()))
                .collect(),
            keep: (0..schema.fields().len())
                .filter(|i| !partition.contains(i))
                .collect(),
        }
    }

    /// The schema of the files.
    pub(crate) fn file_schema(&self, schema: &Schema) -> Result<Schema> {
        schema
            .project(&self.keep)
            .map_err(|e| Error::internal("projecting the file schema").with_source(e))
    }

    /// `batch`'s rows grouped by partition, in the order each partition first appears.
    pub(crate) fn split(&self, batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
        let project = |b: &RecordBatch| {
            b.project(&self.keep)
                .map_err(|e| Error::internal("projecting partition columns").with_source(e))
        };
        if self.columns.is_empty() {
            return Ok(vec![(String::new(), project(batch)?)]);
        }
        let texts = self
            .columns
            .iter()
            .map(|(i, _)| {
                cast(batch.column(*i), &DataType::Utf8)
                    .map_err(|e| Error::internal("partition values as text").with_source(e))
            })
            .collect::<Result<Vec<_>>>()?;
        let texts: Vec<_> = texts.iter().map(|a| a.as_string::<i32>()).collect();
        let mut order: Vec<Vec<Option<&str>>> = Vec::new();
        let mut rows: HashMap<Vec<Option<&str>>, Vec<u32>> = HashMap::new();
        let mut key = Vec::with_capacity(texts.len());
        for row in 0..batch.num_rows() {
            key.clear();
            key.extend(texts.iter().map(|t| t.is_valid(row).then(|| t.value(row))));
            let index = u32::try_from(row)
                .map_err(|_| Error::internal("a batch of more than 4 billion rows"))?;
            match rows.get_mut(&key) {
                Some(list) => list.push(index),
                None => {
                    order.push(key.clone());
                    rows.insert(key.clone(), vec![index]);
                }
            }
        }
        let mut out = Vec::with_capacity(order.len());
        for key in order {
            let dir = self.directory(&key);
            let indices = rows.remove(&key).unwrap_or_default();
            let part = if indices.len() == batch.num_rows() {
                batch.clone()
            } else {
                arrow_select::take::take_record_batch(batch, &UInt32Array::from(indices))
                    .map_err(|e| Error::internal("splitting partitions").with_source(e))?
            };
            out.push((dir, project(&part)?));
        }
        Ok(out)
    }

    fn directory(&self, values: &[Option<&str>]) -> String {
        let parts: Vec<String> = self
            .columns
            .iter()
            .zip(values)
            .map(|((_, name), value)| {
                let value = match value {
                    Some(v) if !v.is_empty() => escape(v),
                    _ => NULL_PARTITION.to_string(),
                };
                format!("{}={value}", escape(name))
            })
            .collect();
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Date32Array, Int64Array, StringArray};

    use super::*;

    #[test]
    fn rows_split_by_partition_in_first_seen_order_without_the_partition_columns() {
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef,
            ),
            (
                "region",
                Arc::new(StringArray::from(vec![
                    Some("eu"),
                    None,
                    Some("a/b=c"),
                    Some("eu"),
                ])),
            ),
            (
                "day",
                Arc::new(Date32Array::from(vec![19_723, 19_723, 0, 19_723])),
            ),
        ])
        .unwrap();
        let schema = batch.schema();
        let s = Splitter::new(
            &schema,
            &resolve(&schema, &["region".into(), "day".into()]).unwrap(),
        );
        let parts = s.split(&batch).unwrap();
        let dirs: Vec<&str> = parts.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(
            dirs,
            [
                "region=eu/day=2024-01-01",
                "region=__HIVE_DEFAULT_PARTITION__/day=2024-01-01",
                "region=a%2Fb%3Dc/day=1970-01-01"
            ]
        );
        assert_eq!(parts[0].1.num_rows(), 2);
        assert_eq!(parts[0].1.num_columns(), 1);
    }

    #[test]
    fn types_without_a_plain_text_form_cannot_partition() {
        let schema = Schema::new(vec![arrow_schema::Field::new("x", DataType::Float64, true)]);
        let err = resolve(&schema, &["x".into()]).unwrap_err();
        assert!(err.message().contains("derive a day"), "{err:?}");
        assert!(resolve(&schema, &["nope".into()]).is_err());
    }
}
