//! A byte-level JSON scanner: finds where values start and end without building them.
//!
//! The record arrays of an API page are located (`records_path`), split into records and
//! handed to arrow-json's decoder as byte slices; only small envelope values (a next-page
//! token, a total) are ever parsed into `serde_json::Value`. The scanner checks structure
//! (brackets, strings, separators) and reports the byte offset of what is wrong; arrow-json
//! checks the values themselves.

/// A structural error at a byte offset of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanError {
    /// 0-based byte offset.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed JSON at byte {}: {}",
            self.offset, self.message
        )
    }
}

type Scan<T> = Result<T, ScanError>;

/// Where a value is: `(start, end)` byte offsets, end exclusive.
pub(crate) type Span = (usize, usize);

fn err<T>(offset: usize, message: impl Into<String>) -> Scan<T> {
    Err(ScanError {
        offset,
        message: message.into(),
    })
}

/// The offset of the first non-whitespace byte at or after `at`.
pub(crate) fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while at < b.len() && matches!(b[at], b' ' | b'\t' | b'\n' | b'\r') {
        at += 1;
    }
    at
}

/// The end (exclusive) of the string whose opening quote is at `at`.
fn skip_string(b: &[u8], at: usize) -> Scan<usize> {
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Ok(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    err(at, "unterminated string")
}

/// Nesting deeper than this is refused (the scanner recurses; a hostile body must not
/// exhaust the stack).
const MAX_DEPTH: usize = 256;

/// The end (exclusive) of the value starting at `at` (after whitespace).
pub(crate) fn skip_value(b: &[u8], at: usize) -> Scan<usize> {
    skip_nested(b, at, 0)
}

fn skip_nested(b: &[u8], at: usize, depth: usize) -> Scan<usize> {
    if depth > MAX_DEPTH {
        return err(at, format!("values nested more than {MAX_DEPTH} deep"));
    }
    let at = skip_ws(b, at);
    match b.get(at) {
        None => err(at, "unexpected end of the body, expected a value"),
        Some(b'"') => skip_string(b, at),
        Some(b'{') => {
            let mut i = skip_ws(b, at + 1);
            if b.get(i) == Some(&b'}') {
                return Ok(i + 1);
            }
            loop {
                if b.get(i) != Some(&b'"') {
                    return err(i, "expected a field name");
                }
                i = skip_ws(b, skip_string(b, i)?);
                if b.get(i) != Some(&b':') {
                    return err(i, "expected `:`");
                }
                i = skip_ws(b, skip_nested(b, i + 1, depth + 1)?);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b'}') => return Ok(i + 1),
                    _ => return err(i, "expected `,` or `}`"),
                }
            }
        }
        Some(b'[') => {
            let mut i = skip_ws(b, at + 1);
            if b.get(i) == Some(&b']') {
                return Ok(i + 1);
            }
            loop {
                i = skip_ws(b, skip_nested(b, i, depth + 1)?);
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(b']') => return Ok(i + 1),
                    _ => return err(i, "expected `,` or `]`"),
                }
            }
        }
        Some(c) if c.is_ascii_digit() || *c == b'-' || c.is_ascii_alphabetic() => {
            let mut i = at;
            while i < b.len() && !matches!(b[i], b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            Ok(i)
        }
        Some(_) => err(at, "unexpected character, expected a value"),
    }
}

/// The fields of the object starting at `at`: each raw (still escaped) key with the span of
/// its value. Empty when the value is not an object.
pub(crate) fn fields(b: &[u8], at: usize) -> Scan<Vec<(&[u8], Span)>> {
    let at = skip_ws(b, at);
    let mut out = Vec::new();
    if b.get(at) != Some(&b'{') {
        return Ok(out);
    }
    let mut i = skip_ws(b, at + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return err(i, "expected a field name");
        }
        let key_end = skip_string(b, i)?;
        let key = &b[i + 1..key_end - 1];
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return err(i, "expected `:`");
        }
        let start = skip_ws(b, i + 1);
        let end = skip_value(b, start)?;
        out.push((key, (start, end)));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Ok(out),
            _ => return err(i, "expected `,` or `}`"),
        }
    }
}

/// The span of the field `name` of the object starting at `at`, or `None` if it has none.
fn field(b: &[u8], at: usize, name: &str) -> Scan<Option<(usize, usize)>> {
    Ok(fields(b, at)?
        .into_iter()
        .find(|(key, _)| key_matches(key, name))
        .map(|(_, span)| span))
}

/// Whether a raw (still escaped) key equals `name`. Keys with escapes are decoded first.
pub(crate) fn key_matches(raw: &[u8], name: &str) -> bool {
    if !raw.contains(&b'\\') {
        return raw == name.as_bytes();
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k == name)
}

/// The span of the value at `path` (object field names, array indexes as numbers) in the
/// value at `span`, or `None` when some step does not exist.
pub(crate) fn pointer(
    b: &[u8],
    mut span: (usize, usize),
    path: &[String],
) -> Scan<Option<(usize, usize)>> {
    for step in path {
        let next = match b.get(span.0) {
            Some(b'{') => field(b, span.0, step)?,
            Some(b'[') => match step.parse::<usize>() {
                Ok(index) => elements(b, span.0)?.into_iter().nth(index),
                Err(_) => None,
            },
            _ => None,
        };
        match next {
            Some(s) => span = s,
            None => return Ok(None),
        }
    }
    Ok(Some(span))
}

/// The spans of the elements of the array starting at `at`.
pub(crate) fn elements(b: &[u8], at: usize) -> Scan<Vec<(usize, usize)>> {
    let at = skip_ws(b, at);
    if b.get(at) != Some(&b'[') {
        return err(at, "expected an array");
    }
    let mut out = Vec::new();
    let mut i = skip_ws(b, at + 1);
    if b.get(i) == Some(&b']') {
        return Ok(out);
    }
    loop {
        let start = skip_ws(b, i);
        let end = skip_value(b, start)?;
        out.push((start, end));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b']') => return Ok(out),
            _ => return err(i, "expected `,` or `]` after an array element"),
        }
    }
}

/// `/data/items` (JSON pointer, with `~0`/`~1` escapes) or `data.items` → steps; empty or
/// `/` → the whole body.
pub(crate) fn parse_path(path: &str) -> Vec<String> {
    let path = path.trim();
    if path.is_empty() || path == "/" {
        return Vec::new();
    }
    if let Some(pointer) = path.strip_prefix('/') {
        pointer
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect()
    } else {
        path.split('.').map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &str) -> (usize, usize) {
        let at = skip_ws(body.as_bytes(), 0);
        (at, skip_value(body.as_bytes(), at).expect("a value"))
    }

    fn text(b: &str, span: (usize, usize)) -> &str {
        &b[span.0..span.1]
    }

    #[test]
    fn finds_nested_values_and_elements() {
        let body = r#" {"meta": {"next": "a\"b", "n": [1, 2]}, "data": {"items": [{"a": "]"}, {"a": 2} ]}} "#;
        let items = pointer(body.as_bytes(), whole(body), &parse_path("/data/items"))
            .expect("scans")
            .expect("found");
        let els = elements(body.as_bytes(), items.0).expect("array");
        assert_eq!(els.len(), 2);
        assert_eq!(text(body, els[0]), r#"{"a": "]"}"#);
        let next = pointer(body.as_bytes(), whole(body), &parse_path("meta.next"))
            .expect("scans")
            .expect("found");
        assert_eq!(text(body, next), r#""a\"b""#);
        let n1 = pointer(body.as_bytes(), whole(body), &parse_path("/meta/n/1")).expect("scans");
        assert_eq!(n1.map(|s| text(body, s)), Some("2"));
        assert_eq!(
            pointer(body.as_bytes(), whole(body), &parse_path("/missing")).expect("scans"),
            None
        );
    }

    #[test]
    fn structural_errors_carry_the_offset() {
        let body = br#"[{"a": 1}, {"a": 2]"#;
        let e = elements(body, 0).expect_err("broken");
        assert_eq!(e.offset, 18, "{e:?}");
        assert!(elements(b"[\"abc", 0).is_err());
        assert!(elements(b"[]", 0).expect("empty").is_empty());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let body = "[".repeat(100_000);
        let e = skip_value(body.as_bytes(), 0).expect_err("too deep");
        assert!(e.message.contains("nested"), "{e:?}");
    }

    #[test]
    fn escaped_keys_match() {
        let body = br#"{"a\u0062": 1}"#;
        assert!(field(body, 0, "ab").expect("scans").is_some());
    }
}
