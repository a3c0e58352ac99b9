//! `pipe inspect`: a pipeline's destination table — schema, size, commits (what
//! `pipe table inspect <pipeline>` shows).

use std::path::Path;
use std::process::ExitCode;

use pipe_framework::{Error, Pipeline, Registry, TableInfo};

use crate::output::{bytes, group, print_json};

pub(crate) async fn inspect(
    file: &Path,
    registry: &Registry,
    json: bool,
) -> Result<ExitCode, Error> {
    let pipeline = Pipeline::load(file, registry)?;
    let operations = pipeline.destination.operations().ok_or_else(|| {
        Error::user(format!(
            "destination {} cannot be inspected",
            pipeline.destination.describe()
        ))
    })?;
    let info = operations.inspect(None).await?;
    match (info, json) {
        (None, true) => print_json(&serde_json::Value::Null),
        (None, false) => out!(
            "{}: the table does not exist yet (the first run creates it)",
            pipeline.destination.describe()
        ),
        (Some(info), true) => print_json(&info),
        (Some(info), false) => print(&info),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print(info: &TableInfo) {
    out!("table     {}", info.table);
    if let Some(location) = &info.location {
        out!("metadata  {location}");
    }
    let count = |n: Option<u64>| n.map_or_else(|| "?".to_string(), group);
    out!(
        "rows      {}   files {}   size {}",
        count(info.rows),
        count(info.files),
        info.bytes.map_or_else(|| "?".to_string(), bytes)
    );
    for (k, v) in &info.properties {
        out!("{k:<24}{v}");
    }
    out!("");
    out!("{:>4}  {:<28}{:<10}{}", "id", "column", "required", "type");
    for c in &info.columns {
        let id = c.id.map(|i| i.to_string()).unwrap_or_default();
        let required = if c.required { "yes" } else { "" };
        out!("{id:>4}  {:<28}{required:<10}{}", c.name, c.r#type);
    }
    out!("");
    out!(
        "  {:<21}{:<27}{:<11}{:>12}{:>8}  run",
        "commit",
        "time",
        "operation",
        "rows",
        "files"
    );
    for c in &info.commits {
        let mark = if c.current { "*" } else { " " };
        let run = match (&c.pipeline, &c.run_id) {
            (Some(p), Some(r)) => format!("{p} {r}"),
            (Some(p), None) => p.clone(),
            _ => String::new(),
        };
        let count = |n: Option<u64>| n.map_or_else(String::new, |n| n.to_string());
        out!(
            "{mark} {:<21}{:<27}{:<11}{:>12}{:>8}  {run}",
            c.id,
            c.timestamp,
            c.operation,
            count(c.rows),
            count(c.files),
        );
    }
}
