//! Credential masking for everything that leaves the process as text (errors, logs,
//! `status`, metrics): `scheme://user:pass@host` becomes `scheme://user:***@host` and
//! `password=…`-style parameters become `password=***`.

use std::borrow::Cow;

const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "private_key",
    "client_secret",
    "sslpassword",
];

const MASK: &str = "***";

/// Masks credentials found anywhere in `text`.
pub fn mask_secrets(text: &str) -> Cow<'_, str> {
    let url_masked = mask_url_userinfo(text);
    match mask_params(&url_masked) {
        Cow::Borrowed(_) => url_masked,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

fn mask_url_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) if authority[..at].contains(':') => {
                let user = &authority[..authority[..at].find(':').unwrap_or(at)];
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
                out.push_str(&authority[at..]);
                changed = true;
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

fn mask_params(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    let mut spans = Vec::new();
    for name in SECRET_PARAMS {
        let mut from = 0;
        while let Some(found) = lower[from..].find(name) {
            let start = from + found;
            let after = start + name.len();
            from = after;
            // A parameter name must stand alone: `password=` but not `my_password_hint=`.
            let standalone = start == 0
                || !lower.as_bytes()[start - 1].is_ascii_alphanumeric()
                    && lower.as_bytes()[start - 1] != b'_';
            let value_start = lower[after..]
                .find(|c: char| c != ' ')
                .map(|o| after + o)
                .filter(|&p| matches!(lower.as_bytes()[p], b'=' | b':'))
                .map(|p| p + 1);
            if let (true, Some(vs)) = (standalone, value_start) {
                let vs = vs + lower[vs..].len() - lower[vs..].trim_start().len();
                let ve = lower[vs..]
                    .find(|c: char| {
                        matches!(c, '&' | ';' | ',' | '"' | '\'' | '}') || c.is_whitespace()
                    })
                    .map_or(lower.len(), |o| vs + o);
                if ve > vs && &text[vs..ve] != MASK {
                    spans.push((vs, ve));
                }
            }
        }
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (s, e) in spans {
        if s < last {
            continue;
        }
        out.push_str(&text[last..s]);
        out.push_str(MASK);
        last = e;
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::mask_secrets;

    #[test]
    fn masks_url_passwords() {
        assert_eq!(
            mask_secrets("mongodb://admin:s3cr%40t@db:27017/x?ssl=true"),
            "mongodb://admin:***@db:27017/x?ssl=true"
        );
        assert_eq!(
            mask_secrets("failed: postgresql://warp_user:pw@pg:5432/w and mysql://root:x@h/d"),
            "failed: postgresql://warp_user:***@pg:5432/w and mysql://root:***@h/d"
        );
        // No password: nothing to hide, text unchanged.
        assert_eq!(
            mask_secrets("mysql://root@h:3306/d"),
            "mysql://root@h:3306/d"
        );
    }

    #[test]
    fn masks_key_value_parameters() {
        assert_eq!(
            mask_secrets("host=pg user=u password=hunter2 dbname=w"),
            "host=pg user=u password=*** dbname=w"
        );
        assert_eq!(
            mask_secrets("https://x/?api_key=abc&mode=1"),
            "https://x/?api_key=***&mode=1"
        );
        assert_eq!(mask_secrets("Password: hunter2"), "Password: ***");
        assert_eq!(mask_secrets("password_hint=blue"), "password_hint=blue");
    }
}
