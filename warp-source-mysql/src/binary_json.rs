//! MySQL's binary JSON (the binlog's form of a JSON column) as JSON text. Values MySQL
//! keeps "opaque" inside a document — DECIMAL, DATE, TIME, DATETIME, e.g. from
//! `JSON_OBJECT('price', 9.99)` — come out as MySQL prints them: a decimal as a number
//! with its exact digits (not a float, not a string), dates and times as strings.
//! Other opaque types keep MySQL's `base64:type<n>:<data>` form. A document that cannot
//! be decoded is an error for its row (dead-lettered), never for the table.

use std::fmt::Write as _;

use mysql_async::binlog::jsonb::{self, JsonContainer, JsonDom, JsonNumber, JsonScalar};

/// The document as JSON text.
pub fn to_text(value: jsonb::Value<'_>) -> std::io::Result<String> {
    let mut out = String::new();
    render(value.parse()?, &mut out);
    Ok(out)
}

fn render(dom: JsonDom, out: &mut String) {
    match dom {
        JsonDom::Container(JsonContainer::Array(items)) => {
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(item, out);
            }
            out.push(']');
        }
        JsonDom::Container(JsonContainer::Object(members)) => {
            out.push('{');
            for (i, (key, value)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&serde_json::Value::String(key).to_string());
                out.push_str(": ");
                render(value, out);
            }
            out.push('}');
        }
        JsonDom::Scalar(JsonScalar::Number(JsonNumber::Decimal(d))) => {
            let _ = write!(out, "{d}");
        }
        JsonDom::Scalar(scalar) => out.push_str(&serde_json::Value::from(scalar).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use mysql_common::io::ParseBuf;
    use mysql_common::proto::MyDeserialize;

    use super::*;

    /// A JSON column's bytes as MySQL writes them in a rows event.
    fn decode(bytes: &[u8]) -> std::io::Result<String> {
        let mut buf = ParseBuf(bytes);
        to_text(jsonb::Value::deserialize((), &mut buf)?)
    }

    /// `{"price": <opaque DECIMAL(3,2) 9.99>}`: a small object (type 0x00) with one key
    /// and an opaque value (0x0f): field type 246 (NEWDECIMAL), length 4, precision 3,
    /// scale 2, and the packed digits (9 | 99, sign bit set for a positive number).
    const PRICE: &[u8] = &[
        0x00, 0x01, 0x00, 0x16, 0x00, // small object: 1 member, 22 bytes
        0x0b, 0x00, 0x05, 0x00, // key at 11, 5 bytes
        0x0f, 0x10, 0x00, // opaque value at 16
        b'p', b'r', b'i', b'c', b'e', // key
        0xf6, 0x04, 0x03, 0x02, 0x89, 0x63, // NEWDECIMAL, 4 bytes: (3, 2) 9.99
    ];

    #[test]
    fn opaque_decimals_are_numbers_with_their_exact_digits() {
        assert_eq!(decode(PRICE).unwrap(), r#"{"price": 9.99}"#);
    }

    #[test]
    fn opaque_dates_are_strings_and_plain_values_stay_json() {
        // [<opaque DATE 2024-01-15>, 7, "a"] as a small array (type 0x02): the date packed
        // as MySQL packs it (year*13+month)<<22 | day<<17, shifted by 24 bits.
        let ymd: i64 = ((2024 * 13 + 1) << 22 | 15 << 17) << 24;
        let mut bytes = vec![0x02, 0x03, 0x00];
        let size_at = bytes.len();
        bytes.extend([0, 0]); // size, set below
                              // value entries: opaque at offset, int16 inlined, string at offset
        let header = 4 + 3 * 3;
        bytes.extend([0x0f, header as u8, 0x00]);
        bytes.extend([0x05, 0x07, 0x00]);
        let string_at = header + 2 + 8;
        bytes.extend([0x0c, string_at as u8, 0x00]);
        bytes.extend([0x0a, 0x08]); // MYSQL_TYPE_DATE, 8 bytes
        bytes.extend(ymd.to_le_bytes());
        bytes.extend([0x01, b'a']);
        let size = (bytes.len() - 1) as u16;
        bytes[size_at..size_at + 2].copy_from_slice(&size.to_le_bytes());
        let text = decode(&bytes).unwrap();
        assert!(text.starts_with(r#"["2024-01-15"#), "{text}");
        assert!(text.ends_with(r#", 7, "a"]"#), "{text}");
    }

    #[test]
    fn a_document_that_cannot_be_decoded_is_an_error() {
        assert!(decode(&PRICE[..PRICE.len() - 2]).is_err());
        assert!(decode(&[0x7f]).is_err());
    }
}
