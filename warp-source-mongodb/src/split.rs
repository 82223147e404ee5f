//! Change events over 16 MB (an `updateLookup` document near the limit, say). MongoDB
//! 7.0 and 6.0.9+ split them into fragments with `$changeStreamSplitLargeEvent`; each
//! fragment holds some of the event's top-level fields, its own resume token (`_id`) and
//! `splitEvent: {fragment, of}`. They are put back together here before decoding.
//! Positions only ever stand at whole events, so a restart reads every fragment again.

use bson::{doc, Bson, Document};

/// The stage that splits large events; it must be the pipeline's last.
pub fn stage() -> Document {
    doc! { "$changeStreamSplitLargeEvent": {} }
}

/// Whether a server of this `buildInfo` version splits large events.
pub fn supported(version: &str) -> bool {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    // 6.1–6.3 were rapid releases without it.
    major >= 7 || (major, minor) == (6, 0) && patch >= 9
}

/// The fragments of the event being read.
#[derive(Debug, Default)]
pub struct Reassembly {
    partial: Option<(i64, i64, Document)>,
}

impl Reassembly {
    /// Whether fragments of an event are in hand (the stream stands inside it).
    pub fn pending(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes one event document: the whole event when `doc` completes one (or was never
    /// split), `None` while fragments are missing. Fragments out of order are an error:
    /// the event cannot be rebuilt.
    pub fn push(&mut self, doc: Document) -> Result<Option<Document>, String> {
        let Some(split) = doc.get_document("splitEvent").ok() else {
            return match self.partial {
                None => Ok(Some(doc)),
                Some((seen, of, _)) => Err(format!(
                    "a whole change event arrived after fragment {seen} of {of} of a split one"
                )),
            };
        };
        let number = |k: &str| match split.get(k) {
            Some(Bson::Int32(n)) => Some(i64::from(*n)),
            Some(Bson::Int64(n)) => Some(*n),
            _ => None,
        };
        let (Some(fragment), Some(of)) = (number("fragment"), number("of")) else {
            return Err(format!("unreadable splitEvent: {split}"));
        };
        let (seen, mut merged) = match self.partial.take() {
            None if fragment == 1 => (0, Document::new()),
            Some((seen, was_of, merged)) if was_of == of && fragment == seen + 1 => (seen, merged),
            Some((seen, was_of, _)) => {
                return Err(format!(
                    "change event fragment {fragment} of {of} after fragment {seen} of {was_of}"
                ))
            }
            None => {
                return Err(format!(
                    "change event fragment {fragment} of {of} without the fragments before it"
                ))
            }
        };
        debug_assert_eq!(seen + 1, fragment);
        for (k, v) in doc {
            // Each fragment carries its own token; the last one's stands for the event.
            if k != "splitEvent" {
                merged.insert(k, v);
            }
        }
        if fragment == of {
            return Ok(Some(merged));
        }
        self.partial = Some((fragment, of, merged));
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_with_the_stage() {
        for v in ["7.0.0", "7.0.12", "8.0.4", "6.0.9", "6.0.20", "10.1.0-rc0"] {
            assert!(supported(v), "{v}");
        }
        for v in ["6.0.8", "6.3.1", "6.1.0", "5.0.26", "4.4.29", ""] {
            assert!(!supported(v), "{v}");
        }
    }

    /// An update event split in three as the server sends it: the fragments' fields in
    /// the server's order, each with its own token.
    #[test]
    fn fragments_are_put_back_together_in_order() {
        let big = "x".repeat(1024);
        let fragments = [
            doc! { "_id": { "_data": "8266...01" }, "splitEvent": { "fragment": 1, "of": 3 },
            "operationType": "update", "clusterTime": bson::Timestamp { time: 1_700_000_000, increment: 1 },
            "ns": { "db": "shop", "coll": "orders" }, "documentKey": { "_id": 7 } },
            doc! { "_id": { "_data": "8266...02" }, "splitEvent": { "fragment": 2, "of": 3 },
            "fullDocument": { "_id": 7, "blob": big.clone() } },
            doc! { "_id": { "_data": "8266...03" }, "splitEvent": { "fragment": 3, "of": 3 },
            "wallTime": bson::DateTime::from_millis(1_700_000_000_000) },
        ];
        let mut r = Reassembly::default();
        assert_eq!(r.push(fragments[0].clone()), Ok(None));
        assert!(r.pending());
        assert_eq!(r.push(fragments[1].clone()), Ok(None));
        let whole = r.push(fragments[2].clone()).unwrap().expect("complete");
        assert!(!r.pending());
        assert_eq!(
            whole.get_document("_id").unwrap().get_str("_data"),
            Ok("8266...03")
        );
        assert_eq!(whole.get_str("operationType"), Ok("update"));
        assert_eq!(
            whole.get_document("fullDocument").unwrap().get_str("blob"),
            Ok(big.as_str())
        );
        assert!(whole.get("wallTime").is_some() && whole.get("splitEvent").is_none());
        // The decoder reads it like any event.
        let event = crate::changes::Event::parse(&whole).unwrap();
        assert_eq!(event.id, Some(Bson::Int32(7)));
        assert_eq!(event.collection.as_deref(), Some("orders"));

        // Unsplit events pass through; a gap or a restart in the middle is an error.
        let plain = doc! { "_id": { "_data": "9" }, "operationType": "delete" };
        assert_eq!(r.push(plain.clone()), Ok(Some(plain.clone())));
        assert!(r.push(fragments[1].clone()).is_err(), "fragment 2 first");
        let mut r = Reassembly::default();
        r.push(fragments[0].clone()).unwrap();
        assert!(r.push(fragments[2].clone()).is_err(), "fragment 2 missing");
        let mut r = Reassembly::default();
        r.push(fragments[0].clone()).unwrap();
        assert!(r.push(plain).is_err(), "whole event inside a split one");
    }
}
