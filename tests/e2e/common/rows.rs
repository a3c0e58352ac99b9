//! The order rows the Iceberg and Delta end-to-end tests load, and a listing of the files a
//! table directory holds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Value, json};

/// One order row of the test CSVs.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub name: String,
    pub amount: String,
    pub region: &'static str,
    pub day: u32,
}

impl Row {
    pub fn new(id: i64, version: u32) -> Self {
        let regions = ["eu", "us", "apac"];
        Self {
            id,
            name: format!("n{id}v{version}"),
            amount: format!("{}.{:02}", id * 3 + i64::from(version), version % 100),
            region: regions[usize::try_from(id).unwrap() % 3],
            day: 1 + u32::try_from(id).unwrap() % 5,
        }
    }

    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},2024-03-0{}T10:00:00Z\n",
            self.id, self.name, self.amount, self.region, self.day
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "amount": self.amount, "region": self.region,
            "ts": format!("2024-03-0{}T10:00:00+00:00", self.day),
        })
    }
}

pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from("id,name,amount,region,ts\n");
    for r in rows {
        s.push_str(&r.csv());
    }
    s
}

/// `rows` (dicts with an `id`, as a Python reader prints them) equal `reference`.
pub fn expect_rows(v: &Value, reference: &BTreeMap<i64, Row>, what: &str) {
    let want: Vec<Value> = reference.values().map(Row::json).collect();
    assert_eq!(v["rows"], Value::Array(want), "{what}: rows differ");
}

/// Every file under the warehouse.
pub fn on_disk(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(on_disk(&e.path()));
            } else {
                out.insert(e.path().display().to_string());
            }
        }
    }
    out
}
