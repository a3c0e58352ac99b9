//! A string that never shows up in logs or error messages.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret configuration value (password, token, URL with credentials). `Debug` and
/// `Display` print `***`; read it with [`Secret::expose`] only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// `text` with the password of every URL in it (`scheme://user:PASSWORD@host`) and of every
/// `password=` parameter (`?password=…`, `host=h password=…`) replaced by `***`. Error messages and the run ledger pass through this, so a credential that reached
/// a message (a path like `https://user:pw@host/file.csv`, a driver's error quoting its URL)
/// is never shown or stored.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    match redact_userinfo(text) {
        std::borrow::Cow::Borrowed(t) => redact_password_parameter(t),
        std::borrow::Cow::Owned(t) => {
            std::borrow::Cow::Owned(redact_password_parameter(&t).into_owned())
        }
    }
}

/// `password=VALUE` (a connection string's query parameter) with the value replaced by `***`.
fn redact_password_parameter(text: &str) -> std::borrow::Cow<'_, str> {
    const KEY: &str = "password=";
    if !text.to_ascii_lowercase().contains(KEY) {
        return std::borrow::Cow::Borrowed(text);
    }
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find(KEY) {
        let value = at + found + KEY.len();
        out.push_str(&text[at..value]);
        out.push_str("***");
        at = text[value..]
            .find(['&', ' ', '"', '\'', '\n', ';', ')'])
            .map_or(text.len(), |i| value + i);
    }
    out.push_str(&text[at..]);
    std::borrow::Cow::Owned(out)
}

fn redact_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        out.push_str(&rest[..start]);
        let authority_end = rest[start..]
            .find(['/', '"', '\'', ' ', '?', '#', ')', '>', '\n'])
            .map_or(rest.len(), |i| start + i);
        let authority = &rest[start..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &rest[authority_end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_redacted_anywhere_in_a_message() {
        assert_eq!(
            redact("GET https://u:hunter2@h/x.csv failed; see postgres://etl:pw@db/s"),
            "GET https://u:***@h/x.csv failed; see postgres://etl:***@db/s"
        );
        assert_eq!(redact("s3://bucket/a@b.csv"), "s3://bucket/a@b.csv");
        assert_eq!(redact("no urls here"), "no urls here");
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=hunter2 failed"),
            "postgres://u@h/db?sslmode=require&password=*** failed"
        );
        assert_eq!(redact("host=h PASSWORD=x1;"), "host=h PASSWORD=***;");
        assert_eq!(redact("postgres://etl@db/s"), "postgres://etl@db/s");
    }

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
