//! A document's destination key: its `_id` as text (docs/mongodb.md, "How collections
//! land"). The text has two forms, chosen by the landing table's landing version:
//!
//! - [`IdForm::Plain`], for tables created before landing versions were recorded:
//!   ObjectIds as 24 hex digits, strings as they are, integers in decimal, anything else
//!   as canonical Extended JSON. Not injective across types: an ObjectId and the string
//!   of its hex digits, or `5` and `"5"`, share a text.
//! - [`IdForm::Distinct`], for tables created since: the same, except that a string
//!   reading like another type's text is written JSON-quoted. A text starting with `"` is
//!   then always a quoted string, and a bare text is never both a string and another
//!   type, so two `_id`s have two texts. Most strings (`order-17`, UUIDs) keep their text.

use bson::Bson;
use warp_core::{Key, LandingVersion, Value};

/// The first landing version whose `_id` texts are distinct across types.
pub const DISTINCT_IDS: LandingVersion = LandingVersion(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdForm {
    #[default]
    Plain,
    Distinct,
}

impl IdForm {
    /// The form of a landing table created with `landing`.
    pub fn of(landing: LandingVersion) -> Self {
        if landing >= DISTINCT_IDS {
            Self::Distinct
        } else {
            Self::Plain
        }
    }

    /// The `_id`'s text.
    pub fn text(self, id: &Bson) -> String {
        match id {
            Bson::ObjectId(oid) => oid.to_hex(),
            Bson::String(s) if self == Self::Distinct && reads_as_another_type(s) => {
                serde_json::Value::String(s.clone()).to_string()
            }
            Bson::String(s) => s.clone(),
            Bson::Int32(i) => i.to_string(),
            Bson::Int64(i) => i.to_string(),
            other => other.clone().into_canonical_extjson().to_string(),
        }
    }

    /// The destination key of a document with this `_id`.
    pub fn key(self, id: &Bson) -> Key {
        vec![Value::Text(self.text(id))]
    }

    /// Every `_id` whose text can be `text`, for a lookup by `$in`. A candidate may match
    /// more than itself (MongoDB's `5` also finds `5.0`): callers compare the answers'
    /// texts with `text` again.
    pub fn candidates(self, text: &str) -> Vec<Bson> {
        if self == Self::Distinct {
            if text.starts_with('"') {
                return serde_json::from_str::<String>(text)
                    .map(|s| vec![Bson::String(s)])
                    .unwrap_or_default();
            }
            if !reads_as_another_type(text) {
                return vec![Bson::String(text.to_owned())];
            }
        }
        let mut out = Vec::new();
        if self == Self::Plain {
            out.push(Bson::String(text.to_owned()));
        }
        if is_object_id_text(text) {
            if let Ok(oid) = bson::oid::ObjectId::parse_str(text) {
                out.push(Bson::ObjectId(oid));
            }
        }
        if let Some(i) = integer_text(text) {
            out.push(Bson::Int64(i));
        }
        if text.starts_with('{') || matches!(text, "true" | "false" | "null") {
            if let Some(b) = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|j| Bson::try_from(j).ok())
            {
                out.push(b);
            }
        }
        out
    }
}

/// Whether a string's bare text could be another type's (or a quoted string's) text.
/// Other types' texts are 24 lowercase hex digits, an integer in decimal, or canonical
/// Extended JSON: an object, `true`, `false` or `null` (arrays cannot be `_id`s; `[` is
/// quoted as well, to keep the rule simple to state).
pub fn reads_as_another_type(s: &str) -> bool {
    s.starts_with(['{', '[', '"'])
        || matches!(s, "true" | "false" | "null")
        || is_object_id_text(s)
        || integer_text(s).is_some()
}

fn is_object_id_text(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The integer whose decimal text `s` is exactly (no sign `+`, no leading zeros).
fn integer_text(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().filter(|i| i.to_string() == s)
}

#[cfg(test)]
mod tests {
    use bson::{doc, oid::ObjectId, Binary, Decimal128, Timestamp};

    use super::*;

    fn oid() -> ObjectId {
        ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap()
    }

    /// `_id`s of every type beside the strings that spell their plain texts.
    fn look_alikes() -> Vec<Bson> {
        let others = vec![
            Bson::ObjectId(oid()),
            Bson::Int32(5),
            Bson::Int64(-9_007_199_254_740_993),
            Bson::Double(2.5),
            Bson::Boolean(true),
            Bson::Boolean(false),
            Bson::Null,
            Bson::Document(doc! {"a": 1}),
            Bson::DateTime(bson::DateTime::from_millis(0)),
            Bson::Decimal128("1.5".parse::<Decimal128>().unwrap()),
            Bson::Timestamp(Timestamp {
                time: 1,
                increment: 2,
            }),
            Bson::Binary(Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![1, 2],
            }),
            Bson::MinKey,
        ];
        let mut all = others.clone();
        for b in &others {
            let plain = IdForm::Plain.text(b);
            all.push(Bson::String(plain.clone()));
            // …and the string a quoted look-alike would be, quoted once more.
            all.push(Bson::String(format!("\"{plain}\"")));
        }
        all.extend(
            [
                "plain",
                "order-17",
                "",
                "007",
                "+5",
                "65A1B2C3D4E5F60718293A4B",
            ]
            .map(|s| Bson::String(s.into())),
        );
        all
    }

    #[test]
    fn distinct_texts_never_meet_across_types() {
        let ids = look_alikes();
        let mut seen = std::collections::HashMap::new();
        for id in &ids {
            if let Some(earlier) = seen.insert(IdForm::Distinct.text(id), id.clone()) {
                // Int32 5 and Int64 5 are one `_id` to MongoDB; nothing else may meet.
                panic!("{earlier:?} and {id:?} share {}", IdForm::Distinct.text(id));
            }
        }
    }

    #[test]
    fn the_plain_form_is_unchanged_and_meets_where_documented() {
        assert_eq!(IdForm::Plain.text(&Bson::Int64(42)), "42");
        assert_eq!(IdForm::Plain.text(&Bson::String("k-1".into())), "k-1");
        assert_eq!(
            IdForm::Plain.text(&Bson::Document(doc! {"a": 1})),
            r#"{"a":{"$numberInt":"1"}}"#
        );
        assert_eq!(
            IdForm::Plain.text(&Bson::ObjectId(oid())),
            "65a1b2c3d4e5f60718293a4b"
        );
        assert_eq!(
            IdForm::Plain.text(&Bson::String("65a1b2c3d4e5f60718293a4b".into())),
            "65a1b2c3d4e5f60718293a4b"
        );
        assert_eq!(IdForm::Plain.text(&Bson::String("5".into())), "5");
        assert_eq!(IdForm::Plain.text(&Bson::Int64(5)), "5");
    }

    #[test]
    fn distinct_quotes_only_strings_that_read_like_another_type() {
        let text = |s: &str| IdForm::Distinct.text(&Bson::String(s.into()));
        assert_eq!(text("order-17"), "order-17");
        assert_eq!(text("007"), "007");
        assert_eq!(text("65A1B2C3D4E5F60718293A4B"), "65A1B2C3D4E5F60718293A4B");
        assert_eq!(text("5"), r#""5""#);
        assert_eq!(
            text("65a1b2c3d4e5f60718293a4b"),
            r#""65a1b2c3d4e5f60718293a4b""#
        );
        assert_eq!(text(r#"{"a":1}"#), r#""{\"a\":1}""#);
        assert_eq!(text("null"), r#""null""#);
        assert_eq!(text(r#""q""#), r#""\"q\"""#);
        assert_eq!(IdForm::Distinct.text(&Bson::Int32(5)), "5");
        assert_eq!(
            IdForm::Distinct.text(&Bson::ObjectId(oid())),
            oid().to_hex()
        );
    }

    /// Each text's candidates hold the `_id` it came from, in both forms (what a
    /// lookup by `$in` needs to find it).
    #[test]
    fn every_text_leads_back_to_its_id() {
        for form in [IdForm::Plain, IdForm::Distinct] {
            for id in look_alikes() {
                let text = form.text(&id);
                let found = form
                    .candidates(&text)
                    .into_iter()
                    .any(|c| form.text(&c) == text && same_id(&c, &id));
                assert!(found, "{form:?}: {id:?} not among the candidates of {text}");
            }
        }
    }

    fn same_id(a: &Bson, b: &Bson) -> bool {
        let int = |v: &Bson| match v {
            Bson::Int32(i) => Some(i64::from(*i)),
            Bson::Int64(i) => Some(*i),
            _ => None,
        };
        a == b || (int(a).is_some() && int(a) == int(b))
    }

    #[test]
    fn a_distinct_lookup_of_a_bare_text_asks_for_no_string() {
        let candidates = IdForm::Distinct.candidates("65a1b2c3d4e5f60718293a4b");
        assert_eq!(candidates, vec![Bson::ObjectId(oid())]);
        assert_eq!(
            IdForm::Distinct.candidates(r#""5""#),
            vec![Bson::String("5".into())]
        );
        assert_eq!(
            IdForm::Distinct.candidates("order-17"),
            vec![Bson::String("order-17".into())]
        );
    }
}
