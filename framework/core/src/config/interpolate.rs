//! `${VAR}` interpolation in string values of a spanned TOML tree.
//!
//! Syntax: `${NAME}` (an error if `NAME` is unset), `${NAME:-default}` (the default when
//! `NAME` is unset or empty), `$${` for a literal `${`. Only string values are interpolated,
//! never keys, so the structure of a file cannot change with the environment. Resolved values
//! never appear in error messages: they may be secrets.

use std::borrow::Cow;
use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;

/// Resolve every `${...}` in the string values under `value` with `lookup`. On error returns
/// the span of the offending string and a message.
pub fn interpolate(
    value: &mut Spanned<DeValue<'_>>,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<(), (Range<usize>, String)> {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains('$') => {
            let resolved = resolve(s, lookup).map_err(|msg| (span, msg))?;
            *s = Cow::Owned(resolved);
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                interpolate(item, lookup)?;
            }
        }
        DeValue::Table(table) => {
            for (_, item) in table.iter_mut() {
                interpolate(item, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn resolve(input: &str, lookup: &mut dyn FnMut(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| "unclosed `${` in an environment reference".to_string())?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if !valid_name(name) {
                return Err(format!(
                    "`${{{expr}}}` is not a valid environment reference (use ${{NAME}} or \
                     ${{NAME:-default}}; `$${{` for a literal `${{`)"
                ));
            }
            match (
                lookup(name).filter(|v| !(default.is_some() && v.is_empty())),
                default,
            ) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (referenced as `${{{name}}}`; \
                         set it or give a default with `${{{name}:-default}}`)"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PG_PASSWORD" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn resolves_variables_defaults_and_escapes() {
        let mut l = env;
        assert_eq!(
            resolve("postgres://u:${PG_PASSWORD}@h/db", &mut l).as_deref(),
            Ok("postgres://u:s3cret@h/db")
        );
        assert_eq!(
            resolve("${NOPE:-fallback}", &mut l).as_deref(),
            Ok("fallback")
        );
        assert_eq!(resolve("${EMPTY:-d}", &mut l).as_deref(), Ok("d"));
        assert_eq!(
            resolve("cost $5 and $${HOME}", &mut l).as_deref(),
            Ok("cost $5 and ${HOME}")
        );
    }

    #[test]
    fn a_missing_variable_is_an_error_that_does_not_leak_values() {
        let mut l = env;
        let err = resolve("${PG_PASSWORD}${MISSING_VAR}", &mut l).expect_err("missing");
        assert!(err.contains("`MISSING_VAR` is not set"), "{err}");
        assert!(!err.contains("s3cret"));
        assert!(resolve("${unclosed", &mut l).is_err());
        assert!(resolve("${1BAD}", &mut l).is_err());
    }
}
