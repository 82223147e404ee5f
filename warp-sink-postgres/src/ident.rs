//! Identifiers: every one is quoted through [`quote`]; names over PostgreSQL's 63-byte
//! limit are shortened deterministically with a hash suffix.

const MAX_IDENT_BYTES: usize = 63;

/// `"name"` with embedded quotes doubled. The only way identifiers enter SQL here.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

/// A string literal with quotes doubled (standard_conforming_strings is on by default
/// since PostgreSQL 9.1; backslashes are then ordinary characters).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The name as PostgreSQL will store it: unchanged when it fits, else its first bytes
/// (on a character boundary) plus `_` and 8 hex digits of a stable hash of the full name.
pub fn fit(name: &str) -> String {
    if name.len() <= MAX_IDENT_BYTES {
        return name.to_owned();
    }
    let suffix = format!("_{:08x}", fnv1a(name.as_bytes()) as u32);
    let mut cut = MAX_IDENT_BYTES - suffix.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &name[..cut])
}

/// FNV-1a, 64-bit: stable across Rust versions and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote(r#"a"b"#), r#""a""b""#);
        assert_eq!(qualified("s", "t t"), r#""s"."t t""#);
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn long_names_are_shortened_stably() {
        let long = "x".repeat(80);
        let short = fit(&long);
        assert_eq!(short.len(), 63);
        assert_eq!(short, fit(&long), "deterministic");
        let other = fit(&format!("{}y", "x".repeat(79)));
        assert_ne!(short, other, "different names stay different");
        assert_eq!(fit("orders"), "orders");
        // Multi-byte characters are never split.
        let accents = "é".repeat(40);
        assert!(fit(&accents).len() <= 63);
    }
}
