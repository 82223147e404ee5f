//! Character sets of text columns. Query results arrive already converted to utf8mb4 by the
//! server; binlog rows carry the bytes as stored, in the column's own character set, so the
//! binlog path decodes them here. A character set we cannot decode exactly as the server
//! converts it is never guessed: its values are unreadable (dead-lettered with the reason).

use std::borrow::Cow;

use encoding_rs::Encoding;

/// How stored bytes of a text column become characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charset {
    /// utf8mb4, utf8mb3 (`utf8`) and ascii: the bytes are UTF-8 already.
    Utf8,
    /// ucs2 and utf16 (big-endian; ucs2 is its BMP subset).
    Utf16Be,
    Utf16Le,
    /// utf32: four big-endian bytes per character.
    Utf32Be,
    /// A single-byte set whose table equals the WHATWG one `encoding_rs` implements
    /// (checked byte by byte against the server's own conversion in the test suites),
    /// except for the bytes the server's older table leaves `undefined`: it reads those as
    /// `?`, so a value holding one is refused rather than landed as either character.
    Single {
        encoding: &'static Encoding,
        undefined: &'static [u8],
        name: &'static str,
    },
    /// Read only through the server's conversion (the snapshot); named in the refusal.
    Unsupported(String),
}

impl Charset {
    /// From `information_schema.COLUMNS.CHARACTER_SET_NAME` (lower case on every server).
    pub fn named(name: &str) -> Self {
        use encoding_rs as e;
        match name.to_ascii_lowercase().as_str() {
            "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => Self::Utf8,
            "ucs2" | "utf16" => Self::Utf16Be,
            "utf16le" => Self::Utf16Le,
            "utf32" => Self::Utf32Be,
            // MySQL's latin1 is cp1252 with the five undefined bytes as C1 controls: the
            // WHATWG windows-1252 table exactly.
            "latin1" => Self::single("latin1", e::WINDOWS_1252, &[]),
            "cp1250" => Self::single("cp1250", e::WINDOWS_1250, &[0x81, 0x83, 0x88, 0x90, 0x98]),
            "cp1251" => Self::single("cp1251", e::WINDOWS_1251, &[0x98]),
            // The server's cp1256 predates the 1998 table WHATWG follows.
            "cp1256" => Self::single(
                "cp1256",
                e::WINDOWS_1256,
                &[0x8a, 0x8f, 0x98, 0x9a, 0x9f, 0xaa, 0xc0, 0xff],
            ),
            "cp1257" => Self::single(
                "cp1257",
                e::WINDOWS_1257,
                &[
                    0x81, 0x83, 0x88, 0x8a, 0x8c, 0x90, 0x98, 0x9a, 0x9c, 0x9f, 0xa1, 0xa5,
                ],
            ),
            "latin2" => Self::single("latin2", e::ISO_8859_2, &[]),
            "koi8r" => Self::single("koi8r", e::KOI8_R, &[]),
            // koi8u and cp866 are left out: MySQL's tables differ from WHATWG's in a few
            // bytes (the all-bytes test in tests/fidelity.rs shows which).
            other => Self::Unsupported(other.to_owned()),
        }
    }

    fn single(name: &'static str, encoding: &'static Encoding, undefined: &'static [u8]) -> Self {
        Self::Single {
            encoding,
            undefined,
            name,
        }
    }

    /// Whether the snapshot reads this set's stored bytes and decodes them here, as the
    /// binlog path does (rather than through the server's conversion, which turns bytes a
    /// set does not define into `?` without a word).
    pub fn decoded_here(&self) -> bool {
        !matches!(self, Self::Utf8 | Self::Unsupported(_))
    }

    /// The characters of `bytes`, as the server would convert them to utf8mb4.
    pub fn decode(&self, bytes: Vec<u8>) -> Result<String, String> {
        let invalid = |name: &str| format!("not valid {name}");
        match self {
            Self::Utf8 => String::from_utf8(bytes).map_err(|_| invalid("UTF-8")),
            Self::Utf16Be => owned(encoding_rs::UTF_16BE, &bytes).ok_or_else(|| invalid("UTF-16")),
            Self::Utf16Le => {
                owned(encoding_rs::UTF_16LE, &bytes).ok_or_else(|| invalid("UTF-16LE"))
            }
            Self::Utf32Be => utf32(&bytes).ok_or_else(|| invalid("UTF-32")),
            Self::Single {
                encoding,
                undefined,
                name,
            } => match bytes.iter().find(|b| undefined.contains(b)) {
                Some(b) => Err(format!(
                    "byte 0x{b:02X} is not a {name} character (the server reads it as '?')"
                )),
                None => owned(encoding, &bytes).ok_or_else(|| invalid(name)),
            },
            Self::Unsupported(name) => Err(format!(
                "character set {name} cannot be decoded from the binlog exactly (the snapshot reads it through the server)"
            )),
        }
    }
}

fn owned(encoding: &'static Encoding, bytes: &[u8]) -> Option<String> {
    encoding
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(Cow::into_owned)
}

fn utf32(bytes: &[u8]) -> Option<String> {
    if bytes.len() % 4 != 0 {
        return None;
    }
    bytes
        .chunks_exact(4)
        .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_decodes_its_bytes() {
        let latin1 = Charset::named("latin1");
        assert_eq!(latin1.decode(b"caf\xe9".to_vec()).unwrap(), "café");
        assert_eq!(latin1.decode(vec![0x80, 0x81]).unwrap(), "€\u{81}");
        assert_eq!(
            Charset::named("ucs2")
                .decode(vec![0x00, 0xfc, 0x20, 0xac])
                .unwrap(),
            "ü€"
        );
        assert_eq!(
            Charset::named("utf16")
                .decode(vec![0xd8, 0x3d, 0xde, 0x00])
                .unwrap(),
            "😀"
        );
        assert_eq!(
            Charset::named("utf16le")
                .decode(vec![0x3d, 0xd8, 0x00, 0xde])
                .unwrap(),
            "😀"
        );
        assert_eq!(
            Charset::named("utf32")
                .decode(vec![0, 1, 0xf6, 0x00])
                .unwrap(),
            "😀"
        );
        assert_eq!(
            Charset::named("cp1251")
                .decode(vec![0xef, 0xf0, 0xe8])
                .unwrap(),
            "при"
        );
    }

    #[test]
    fn what_cannot_be_decoded_exactly_is_an_error() {
        assert!(Charset::named("utf32").decode(vec![0, 0x11, 0, 0]).is_err());
        assert!(Charset::named("utf16").decode(vec![0xd8, 0x3d]).is_err());
        assert!(Charset::named("utf8mb4").decode(vec![0xff]).is_err());
        let undefined = Charset::named("cp1250")
            .decode(vec![b'a', 0x81])
            .unwrap_err();
        assert!(
            undefined.contains("0x81") && undefined.contains("cp1250"),
            "{undefined}"
        );
        let sjis = Charset::named("sjis").decode(b"abc".to_vec()).unwrap_err();
        assert!(sjis.contains("sjis"), "{sjis}");
    }
}
