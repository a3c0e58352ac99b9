//! Finding columns by name, one way for every connector: the exact name first, else the one
//! column whose name matches ignoring ASCII case (SQL engines fold case; `Id` finds `id`). Two
//! columns differing only in case are found only by their exact names.

use arrow_schema::Schema;

use crate::error::{Error, Result};

/// The index of column `name` in `schema`.
pub fn find(schema: &Schema, name: &str) -> Option<usize> {
    if let Ok(i) = schema.index_of(name) {
        return Some(i);
    }
    let mut hits = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name().eq_ignore_ascii_case(name));
    match (hits.next(), hits.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// The indices of `names` in `schema`; an error naming the first one missing, what it is
/// (`merge key`, `partition column`) and whose columns were searched (`the table`).
pub fn resolve(schema: &Schema, names: &[String], what: &str, whose: &str) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|name| {
            find(schema, name).ok_or_else(|| {
                let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                Error::user(format!(
                    "{what} `{name}` is not a column of {whose}; columns: {}",
                    have.join(", ")
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow_schema::{DataType, Field};

    use super::*;

    #[test]
    fn exact_names_win_and_ambiguous_folds_find_nothing() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("Name", DataType::Utf8, true),
            Field::new("x", DataType::Utf8, true),
            Field::new("X", DataType::Utf8, true),
        ]);
        assert_eq!(find(&schema, "ID"), Some(0));
        assert_eq!(find(&schema, "name"), Some(1));
        assert_eq!(find(&schema, "X"), Some(3));
        assert_eq!(find(&schema, "x"), Some(2));
        assert_eq!(find(&schema, "nope"), None);
        let err = resolve(
            &schema,
            &["id".into(), "zz".into()],
            "merge key",
            "the table",
        )
        .expect_err("missing");
        assert!(
            err.message()
                .starts_with("merge key `zz` is not a column of the table")
        );
    }
}
