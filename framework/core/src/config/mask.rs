//! Masking secrets in the configuration lines error messages quote.
//!
//! An error snippet shows the offending line of the file. That line may hold a password in a
//! URL (`url = "postgres://etl:hunter2@db/sales"`) or a secret key's value written inline
//! (`storage_options = { aws_secret_access_key = "…" }`): those characters are replaced by
//! `*`, one for one, so the caret under the error still points at the right column.

/// Key names whose values are secrets (matched case-insensitively as substrings).
const SECRET_KEYS: [&str; 7] = [
    "password",
    "secret",
    "token",
    "credential",
    "access_key",
    "private_key",
    "sas",
];

/// `line` with passwords in URLs and the values of secret-named keys masked.
pub(crate) fn secrets(line: &str) -> String {
    let mut out: Vec<char> = line.chars().collect();
    mask_url_passwords(&mut out);
    mask_secret_values(&mut out);
    out.into_iter().collect()
}

/// `scheme://user:PASSWORD@host` → the password's characters become `*`.
fn mask_url_passwords(chars: &mut [char]) {
    let mut i = 0;
    while i + 3 <= chars.len() {
        if chars[i..i + 3] == [':', '/', '/'] {
            let start = i + 3;
            // The authority ends at the first '/', quote, space or end.
            let end = (start..chars.len())
                .find(|&j| matches!(chars[j], '/' | '"' | '\'' | ' ' | '?' | '#'))
                .unwrap_or(chars.len());
            if let Some(at) = (start..end).rev().find(|&j| chars[j] == '@')
                && let Some(colon) = (start..at).find(|&j| chars[j] == ':')
            {
                for c in &mut chars[colon + 1..at] {
                    *c = '*';
                }
            }
            i = end.max(i + 3);
        } else {
            i += 1;
        }
    }
}

/// `…secret… = "value"` (a bare or inline-table key) → the value's characters become `*`.
fn mask_secret_values(chars: &mut [char]) {
    let text: String = chars.iter().collect::<String>().to_ascii_lowercase();
    let lower: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < lower.len() {
        if lower[i] != '=' {
            i += 1;
            continue;
        }
        // The key before '=': the identifier characters right before it (after spaces).
        let mut k = i;
        while k > 0 && lower[k - 1] == ' ' {
            k -= 1;
        }
        let key_end = k;
        while k > 0
            && (lower[k - 1].is_ascii_alphanumeric()
                || matches!(lower[k - 1], '_' | '-' | '.' | '"'))
        {
            k -= 1;
        }
        let key: String = lower[k..key_end].iter().collect();
        let secret = SECRET_KEYS.iter().any(|s| key.contains(s));
        // The value after '=': a quoted string.
        let mut v = i + 1;
        while v < lower.len() && lower[v] == ' ' {
            v += 1;
        }
        if secret && v < lower.len() && matches!(lower[v], '"' | '\'') {
            let quote = lower[v];
            let end = (v + 1..lower.len())
                .find(|&j| lower[j] == quote)
                .unwrap_or(lower.len());
            for c in &mut chars[v + 1..end] {
                *c = '*';
            }
            i = end;
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::secrets;

    #[test]
    fn url_passwords_are_masked_keeping_columns() {
        let line = r#"url = "postgres://etl:hunter2@db:5432/sales""#;
        let masked = secrets(line);
        assert_eq!(masked, r#"url = "postgres://etl:*******@db:5432/sales""#);
        assert_eq!(masked.len(), line.len());
        // No password, or no userinfo: unchanged.
        let plain = r#"path = "s3://bucket/x@y.csv""#;
        assert_eq!(secrets(plain), plain);
        let user_only = r#"url = "postgres://etl@db/sales""#;
        assert_eq!(secrets(user_only), user_only);
    }

    #[test]
    fn values_of_secret_keys_are_masked() {
        let line = r#"storage_options = { aws_secret_access_key = "abc123", region = "eu" }"#;
        assert_eq!(
            secrets(line),
            r#"storage_options = { aws_secret_access_key = "******", region = "eu" }"#
        );
        assert_eq!(secrets(r#"password = 'pw'"#), r#"password = '**'"#);
        assert_eq!(secrets("batch_rows = 10"), "batch_rows = 10");
    }
}
