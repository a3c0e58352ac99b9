//! Source and destination URIs of `pipe load` and `pipe init`, turned into the `[source]`
//! and `[destination]` tables a pipeline file would have (one code path: the command runs
//! the pipeline those tables make).

use pipe_framework::Error;
use pipe_framework::config::connections::Connections;
use toml::{Table, Value};
use url::Url;

const SOURCES: &str = "postgres://USER@HOST/DB?table=SCHEMA.TABLE (also postgresql://), a local \
    path or glob (data/*.csv), file:///PATH, s3://BUCKET/PATH, gs://…, az://…, abfss://…, \
    https://…/FILE.parquet, or CONNECTION:TABLE (a name from connections.toml)";

const DESTINATIONS: &str = "duckdb://PATH.duckdb?table=SCHEMA.TABLE, delta://PATH (or \
    delta+s3://, delta+gs://, delta+az://, delta+abfss://), parquet://DIR, csv://DIR, \
    ndjson://DIR (also +s3/+gs/+az/+abfss, ?partition_by=a,b), \
    iceberg+sqlite://CATALOG.db?warehouse=DIR&table=NS.TABLE, \
    iceberg+postgres://USER@HOST/DB?warehouse=…&table=…, \
    iceberg+rest://HOST:PORT/PATH?warehouse=…&table=… (iceberg+rests:// for https), or \
    CONNECTION[:TABLE] (a name from connections.toml)";

fn bad(which: &str, uri: &str, why: impl std::fmt::Display, supported: &str) -> Error {
    Error::user(format!(
        "{which} `{}`: {why}; supported: {supported}",
        pipe_framework::secret::redact(uri)
    ))
}

fn string(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

/// The scheme before `://`, if the URI has one.
fn scheme(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once("://")?;
    scheme
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
        .then_some(scheme)
}

/// `uri` without its query, and the query's pairs, refusing keys outside `allowed`.
fn split_query(
    which: &str,
    uri: &str,
    allowed: &[&str],
) -> Result<(String, Vec<(String, String)>), Error> {
    let Some((base, query)) = uri.split_once('?') else {
        return Ok((uri.to_string(), Vec::new()));
    };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(Error::user(format!(
            "{which} `{}`: unknown parameter `{k}`; this scheme takes: {}",
            pipe_framework::secret::redact(uri),
            allowed.join(", ")
        )));
    }
    Ok((base.to_string(), pairs))
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A `NAME:REST` reference to a named connection, if `uri` is one.
fn connection<'a>(uri: &'a str, connections: &Connections) -> Option<(&'a str, Option<&'a str>)> {
    if scheme(uri).is_some() {
        return None;
    }
    let (name, rest) = match uri.split_once(':') {
        Some((n, r)) => (n, Some(r).filter(|r| !r.is_empty())),
        None => (uri, None),
    };
    connections.get(name).map(|_| (name, rest))
}

/// The `[source]` table for `uri`, and the name its data suggests for the table.
pub(crate) fn source(
    uri: &str,
    cursor: Option<&str>,
    connections: &Connections,
) -> Result<(Table, String), Error> {
    const WHICH: &str = "source";
    let mut t = Table::new();
    let name;
    if let Some((conn, rest)) = connection(uri, connections) {
        t.insert("connection".into(), string(conn));
        let table = rest.ok_or_else(|| {
            bad(
                WHICH,
                uri,
                format!("say which table: `{conn}:SCHEMA.TABLE`"),
                SOURCES,
            )
        })?;
        let kind = connections.get(conn).and_then(|c| c.kind()).unwrap_or("");
        let key = if kind == "file" { "path" } else { "table" };
        t.insert(key.into(), string(table));
        name = last_name(table);
    } else {
        match scheme(uri) {
            Some("postgres" | "postgresql") => {
                let mut url = Url::parse(uri)
                    .map_err(|e| bad(WHICH, uri, format!("not a URL: {e}"), SOURCES))?;
                let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
                let table = param(&pairs, "table")
                    .ok_or_else(|| bad(WHICH, uri, "add ?table=SCHEMA.TABLE", SOURCES))?
                    .to_string();
                let rest: Vec<&(String, String)> =
                    pairs.iter().filter(|(k, _)| k != "table").collect();
                if rest.is_empty() {
                    url.set_query(None);
                } else {
                    url.query_pairs_mut().clear().extend_pairs(rest);
                }
                t.insert("type".into(), string("postgres"));
                t.insert("url".into(), string(url.as_str()));
                t.insert("table".into(), string(&table));
                name = last_name(&table);
            }
            Some(
                "file" | "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "http" | "https",
            )
            | None => {
                if scheme(uri).is_none() && uri.contains(':') && !uri.starts_with('/') {
                    let (n, _) = uri.split_once(':').unwrap_or((uri, ""));
                    return Err(bad(WHICH, uri, connections.unknown(n), SOURCES));
                }
                t.insert("type".into(), string("file"));
                t.insert("path".into(), string(uri));
                name = file_name(uri);
            }
            Some(other) => {
                return Err(bad(
                    WHICH,
                    uri,
                    format!("unknown scheme `{other}://`"),
                    SOURCES,
                ));
            }
        }
    }
    if let Some(cursor) = cursor {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "file" {
            return Err(Error::user(
                "--cursor: the file source has no cursor (every run reads the files named); \
                 use it with a database source",
            ));
        }
        t.insert("cursor".into(), string(cursor));
    }
    Ok((t, name))
}

/// The `[destination]` table for `uri`; `table` (from `--table`, else the source's name)
/// names the table where the destination has tables.
pub(crate) fn destination(
    uri: &str,
    table: Option<&str>,
    default_name: &str,
    connections: &Connections,
) -> Result<Table, Error> {
    const WHICH: &str = "destination";
    let mut t = Table::new();
    if let Some((conn, rest)) = connection(uri, connections) {
        t.insert("connection".into(), string(conn));
        let c = connections.get(conn);
        match c.and_then(|c| c.kind()).unwrap_or("") {
            // a directory: `lake:orders` is a directory under the connection's
            "files" | "delta" => {
                if let Some(sub) = rest {
                    let base = c.and_then(|c| c.string("path")).unwrap_or("");
                    let path = format!("{}/{sub}", base.trim_end_matches('/'));
                    t.insert("path".into(), string(path));
                }
            }
            kind => {
                let default = if kind == "duckdb" {
                    format!("main.{default_name}")
                } else {
                    format!("default.{default_name}")
                };
                let name = table.or(rest).map_or(default, str::to_string);
                t.insert("table".into(), string(name));
            }
        }
        return Ok(t);
    }
    let Some(scheme) = scheme(uri) else {
        if let Some((n, _)) = uri.split_once(':') {
            return Err(bad(WHICH, uri, connections.unknown(n), DESTINATIONS));
        }
        return Err(bad(WHICH, uri, "no scheme", DESTINATIONS));
    };
    let rest = &uri[scheme.len() + 3..];
    let (kind, store) = scheme.split_once('+').unwrap_or((scheme, ""));
    if kind == "duckdb" && !store.is_empty() {
        return Err(bad(
            WHICH,
            uri,
            "DuckDB databases are local files",
            DESTINATIONS,
        ));
    }
    match kind {
        "duckdb" => {
            let (path, pairs) = split_query(WHICH, rest, &["table"])?;
            let name = table
                .or(param(&pairs, "table"))
                .map_or_else(|| format!("main.{default_name}"), str::to_string);
            t.insert("type".into(), string("duckdb"));
            t.insert("path".into(), string(path));
            t.insert("table".into(), string(name));
        }
        "delta" | "parquet" | "csv" | "ndjson" => {
            let allowed: &[&str] = if kind == "delta" {
                &[]
            } else {
                &["partition_by"]
            };
            let (path, pairs) = split_query(WHICH, rest, allowed)?;
            let path = match store {
                "" | "file" => path,
                "s3" | "gs" | "az" | "abfss" => format!("{store}://{path}"),
                other => {
                    return Err(bad(
                        WHICH,
                        uri,
                        format!("unknown store `+{other}`"),
                        DESTINATIONS,
                    ));
                }
            };
            if kind == "delta" {
                t.insert("type".into(), string("delta"));
            } else {
                t.insert("type".into(), string("files"));
                t.insert("format".into(), string(kind));
            }
            t.insert("path".into(), string(path));
            if let Some(by) = param(&pairs, "partition_by") {
                let cols: Vec<Value> = by.split(',').map(|c| string(c.trim())).collect();
                t.insert("partition_by".into(), Value::Array(cols));
            }
        }
        "iceberg" => {
            let (target, pairs) = split_query(WHICH, rest, &["warehouse", "table"])?;
            let catalog_uri = match store {
                "sqlite" => format!("sqlite://{target}"),
                "postgres" | "postgresql" => format!("postgres://{target}"),
                "rest" => format!("http://{target}"),
                "rests" => format!("https://{target}"),
                _ => {
                    return Err(bad(
                        WHICH,
                        uri,
                        "say which catalog: iceberg+sqlite://, iceberg+postgres://, iceberg+rest://",
                        DESTINATIONS,
                    ));
                }
            };
            let mut catalog = Table::new();
            let catalog_type = if store.starts_with("rest") {
                "rest"
            } else {
                "sql"
            };
            catalog.insert("type".into(), string(catalog_type));
            catalog.insert("uri".into(), string(catalog_uri));
            if let Some(w) = param(&pairs, "warehouse") {
                catalog.insert("warehouse".into(), string(w));
            } else if catalog_type == "sql" {
                return Err(bad(WHICH, uri, "add ?warehouse=DIR", DESTINATIONS));
            }
            let name = table
                .or(param(&pairs, "table"))
                .map_or_else(|| format!("default.{default_name}"), str::to_string);
            t.insert("type".into(), string("iceberg"));
            t.insert("catalog".into(), Value::Table(catalog));
            t.insert("table".into(), string(name));
        }
        other => {
            return Err(bad(
                WHICH,
                uri,
                format!("unknown scheme `{other}://`"),
                DESTINATIONS,
            ));
        }
    }
    Ok(t)
}

/// `table` (a pipeline section) with the password of every URL value replaced by a
/// reference to the environment variable `var` (`postgres://etl:${PGPASSWORD}@db/sales`):
/// what is printed or saved never holds the secret. Whether one was replaced.
pub(crate) fn hide_passwords(table: &mut Table, var: &str) -> bool {
    let mut hid = false;
    for (_, value) in table.iter_mut() {
        match value {
            Value::String(text) => {
                if let Ok(mut url) = Url::parse(text.as_str())
                    && url.password().is_some()
                    && url.set_password(Some("PIPE_SECRET_MARK")).is_ok()
                {
                    *text = url
                        .as_str()
                        .replacen("PIPE_SECRET_MARK", &format!("${{{var}}}"), 1);
                    hid = true;
                }
            }
            Value::Table(inner) => hid |= hide_passwords(inner, var),
            _ => {}
        }
    }
    hid
}

/// `public.orders` → `orders`.
fn last_name(table: &str) -> String {
    sanitize(table.rsplit('.').next().unwrap_or(table))
}

/// `data/orders_*.csv` → `orders`; a directory or glob → the last plain path segment.
fn file_name(path: &str) -> String {
    let plain = path
        .trim_end_matches('/')
        .rsplit('/')
        .find(|seg| !seg.contains(['*', '?', '[']) && !seg.is_empty())
        .unwrap_or("data");
    sanitize(plain.split('.').next().unwrap_or(plain))
}

/// A name usable as a pipeline and table name.
pub(crate) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() { "data".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Connections {
        Connections::default()
    }

    #[test]
    fn postgres_uris_keep_their_options_and_lose_the_table() {
        let (t, name) = source(
            "postgres://etl@db:5432/sales?sslmode=disable&table=public.orders",
            None,
            &none(),
        )
        .unwrap();
        assert_eq!(
            t["url"].as_str(),
            Some("postgres://etl@db:5432/sales?sslmode=disable")
        );
        assert_eq!(t["table"].as_str(), Some("public.orders"));
        assert_eq!(name, "orders");
        let err = source("postgres://db/x", None, &none()).unwrap_err();
        assert!(err.message().contains("?table="), "{err:?}");
    }

    #[test]
    fn destinations_map_to_their_tables() {
        let d = destination("duckdb://out/x.duckdb?table=sales.o", None, "o", &none()).unwrap();
        assert_eq!(d["path"].as_str(), Some("out/x.duckdb"));
        assert_eq!(d["table"].as_str(), Some("sales.o"));
        let f = destination("parquet+s3://b/p?partition_by=a,b", None, "o", &none()).unwrap();
        assert_eq!(f["path"].as_str(), Some("s3://b/p"));
        assert_eq!(f["partition_by"].as_array().map(Vec::len), Some(2));
        let i = destination(
            "iceberg+sqlite://cat.db?warehouse=wh",
            None,
            "orders",
            &none(),
        )
        .unwrap();
        assert_eq!(i["table"].as_str(), Some("default.orders"));
        let err = destination("mysql://x", None, "o", &none()).unwrap_err();
        assert!(
            err.message().contains("unknown scheme `mysql://`"),
            "{err:?}"
        );
        assert!(err.message().contains("duckdb://PATH"), "{err:?}");
        let err = destination("duckdb://x?tabel=a", None, "o", &none()).unwrap_err();
        assert!(
            err.message().contains("unknown parameter `tabel`"),
            "{err:?}"
        );
    }

    #[test]
    fn file_names_come_from_the_path() {
        assert_eq!(file_name("data/orders_2024.csv"), "orders_2024");
        assert_eq!(file_name("s3://b/raw/events/*.parquet"), "events");
        assert_eq!(sanitize("Order-Lines"), "order_lines");
    }
}
