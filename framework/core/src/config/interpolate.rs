//! `${VAR}` interpolation in string values of a spanned TOML tree.
//!
//! Syntax: `${NAME}` (an error if `NAME` is unset), `${NAME:-default}` (the default when
//! `NAME` is unset or empty; the default may itself hold references, `${A:-${B:-x}}`), `$${`
//! for a literal `${`. Only string values are interpolated, never keys, so the structure of a
//! file cannot change with the environment. Resolved values never appear in error messages:
//! they may be secrets.
//!
//! A string that is exactly one reference (`batch_rows = "${BATCH_ROWS:-16384}"`) is recorded:
//! when the key it sits under wants a number or a boolean, the deserializer converts it
//! ([`super::Section::deserialize`]), so numbers and switches can come from the environment too.

use std::borrow::Cow;
use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;

/// How deeply defaults may nest references (`${A:-${B:-${C}}}` is depth 3).
const MAX_DEPTH: usize = 8;

/// Resolve every `${...}` in the string values under `value` with `lookup`. Returns the spans
/// of the string values that were exactly one reference. On error returns the span of the
/// offending string and a message.
pub fn interpolate(
    value: &mut Spanned<DeValue<'_>>,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Vec<Range<usize>>, (Range<usize>, String)> {
    let mut whole = Vec::new();
    walk(value, lookup, &mut whole)?;
    Ok(whole)
}

fn walk(
    value: &mut Spanned<DeValue<'_>>,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
    whole: &mut Vec<Range<usize>>,
) -> Result<(), (Range<usize>, String)> {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains('$') => {
            if is_one_reference(s) {
                whole.push(span.clone());
            }
            let resolved = resolve(s, lookup, 0).map_err(|msg| (span, msg))?;
            *s = Cow::Owned(resolved);
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                walk(item, lookup, whole)?;
            }
        }
        DeValue::Table(table) => {
            for (_, item) in table.iter_mut() {
                walk(item, lookup, whole)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether `s` is exactly one `${...}` reference (nothing before or after it).
fn is_one_reference(s: &str) -> bool {
    s.strip_prefix("${")
        .and_then(closing_brace)
        .is_some_and(|end| end + 3 == s.len())
}

/// The index in `body` (the text after a `${`) of the `}` that closes it, counting nested
/// `${`…`}` pairs.
fn closing_brace(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn resolve(
    input: &str,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "environment references nest deeper than {MAX_DEPTH} levels"
        ));
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = closing_brace(body)
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
                (None, Some(d)) => out.push_str(&resolve(d, lookup, depth + 1)?),
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

/// The number or boolean an interpolated string spells (`8`, `-1.5`, `true`), as the TOML
/// value the key wants; `None` if it is not one.
pub(crate) fn typed(text: &str) -> Option<DeValue<'static>> {
    let text = text.trim();
    // No number or switch is longer; anything longer is not kept.
    if text.len() > 64 {
        return None;
    }
    let value = DeValue::parse(interned(text)).ok()?.into_inner();
    match value {
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => Some(value),
        _ => None,
    }
}

/// `text` with a `'static` lifetime, which parsed TOML values borrow (the toml crate builds
/// integers only by parsing). Each distinct text is kept once for the process: these are the
/// few numbers and switches pipeline files take from the environment.
fn interned(text: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    static TEXTS: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut texts = TEXTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = texts.get(text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.to_string().into_boxed_str());
    texts.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PG_PASSWORD" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            "B" => Some("bee".into()),
            _ => None,
        }
    }

    fn res(s: &str) -> Result<String, String> {
        resolve(s, &mut env, 0)
    }

    #[test]
    fn resolves_variables_defaults_and_escapes() {
        assert_eq!(
            res("postgres://u:${PG_PASSWORD}@h/db").as_deref(),
            Ok("postgres://u:s3cret@h/db")
        );
        assert_eq!(res("${NOPE:-fallback}").as_deref(), Ok("fallback"));
        assert_eq!(res("${EMPTY:-d}").as_deref(), Ok("d"));
        assert_eq!(res("${NOPE:-}").as_deref(), Ok(""));
        assert_eq!(
            res("cost $5 and $${HOME}").as_deref(),
            Ok("cost $5 and ${HOME}")
        );
    }

    #[test]
    fn defaults_may_hold_references() {
        assert_eq!(res("${A:-${B}}").as_deref(), Ok("bee"));
        assert_eq!(res("${A:-${C:-x}}/y").as_deref(), Ok("x/y"));
        assert_eq!(res("${A:-pre-${B}-post}").as_deref(), Ok("pre-bee-post"));
        let err = res("${A:-${C}}").expect_err("C unset");
        assert!(err.contains("`C` is not set"), "{err}");
        assert!(res("${A:-${B}").is_err(), "unclosed");
    }

    #[test]
    fn a_missing_variable_is_an_error_that_does_not_leak_values() {
        let err = res("${PG_PASSWORD}${MISSING_VAR}").expect_err("missing");
        assert!(err.contains("`MISSING_VAR` is not set"), "{err}");
        assert!(!err.contains("s3cret"));
        assert!(res("${unclosed").is_err());
        assert!(res("${1BAD}").is_err());
    }

    #[test]
    fn whole_references_are_told_from_embedded_ones() {
        assert!(is_one_reference("${A}"));
        assert!(is_one_reference("${A:-${B:-1}}"));
        assert!(!is_one_reference("x${A}"));
        assert!(!is_one_reference("${A}${B}"));
        assert!(!is_one_reference("${A"));
    }

    #[test]
    fn typed_values_are_numbers_and_booleans_only() {
        assert!(matches!(typed("8"), Some(DeValue::Integer(_))));
        assert!(matches!(typed(" -1.5 "), Some(DeValue::Float(_))));
        assert!(matches!(typed("true"), Some(DeValue::Boolean(true))));
        assert!(typed("abc").is_none());
        assert!(typed("\"8\"").is_none());
        assert!(typed("[1]").is_none());
    }
}
