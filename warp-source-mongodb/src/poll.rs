//! The `timestamp` strategy, for deployments without change streams (standalone
//! servers, some MongoDB-compatible services): poll documents in (column, `_id`) order
//! from the watermark's value, skipping the documents at it already delivered. Deletes are not
//! visible to polling (docs/mongodb.md).

use bson::{doc, Bson, Document};
use futures::stream::{BoxStream, TryStreamExt};
use mongodb::Collection;
use warp_core::{Operation, Pace, PollBatch, StreamFragment, Value, Watermark};

use crate::changes::Decoder;
use crate::convert;
use crate::error::{Context, MongoError, Result};
use crate::options::UuidRepresentation;
use crate::shape::ID;

/// Watermark values are only compared, never landed: any representation orders them.
const WATERMARK_UUIDS: UuidRepresentation = UuidRepresentation::Standard;

/// Documents per poll when `stream_batch_size` is unset.
pub const PAGE: usize = 5_000;

/// Where a snapshot (or a chunk read) stands: before the current highest value of
/// `column`. The copy takes only documents below it ([`older_than`]); documents at it or
/// above are the first poll's.
pub async fn current(coll: &Collection<Document>, column: &str) -> Result<Watermark> {
    let top = coll
        .find_one(doc! { column: { "$exists": true, "$ne": null } })
        .sort(doc! { column: -1 })
        .await
        .context("read watermark")?;
    Ok(Watermark::at(
        top.as_ref()
            .and_then(|d| d.get(column))
            .map(|v| convert::value(v, WATERMARK_UUIDS)),
    ))
}

/// The documents a chunk read at a position copies: those the polls from it will not
/// deliver, i.e. whose `column` is missing, null, of another type than the position's
/// value, or below it. Decided here rather than in the query, so the copy and the polls
/// agree exactly whatever the server's range-filter quirks.
#[derive(Debug, Clone)]
pub struct Older {
    column: String,
    top: Option<Value>,
}

impl Older {
    pub fn than(column: &str, at: &Watermark) -> Self {
        Self {
            column: column.to_owned(),
            top: at.value.clone(),
        }
    }

    pub fn keeps(&self, doc: &Document) -> bool {
        let Some(v) = doc.get(&self.column).filter(|v| !matches!(v, Bson::Null)) else {
            return true;
        };
        let Some(top) = &self.top else {
            // The position saw no value: every value is newer than it.
            return false;
        };
        let v = convert::value(v, WATERMARK_UUIDS);
        !same_bracket(&v, top) || v.cmp_key(top).is_lt()
    }
}

/// Whether a range query on `b` can match `a`: MongoDB compares numbers across their
/// types, other values only within their own type.
fn same_bracket(a: &Value, b: &Value) -> bool {
    let numeric = |v: &Value| matches!(v, Value::Int(_) | Value::Float64(_) | Value::Decimal(_));
    (numeric(a) && numeric(b)) || std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// The watermark value as a query bound of the type it was read as.
fn bound(v: &Value) -> Result<Bson> {
    Ok(match v {
        Value::TimestampTz(t) => Bson::DateTime(bson::DateTime::from_chrono(*t)),
        Value::Int(i) => Bson::Int64(*i),
        Value::Float64(f) => Bson::Double(*f),
        Value::Text(s) => Bson::String(s.clone()),
        Value::Decimal(d) => {
            Bson::Decimal128(d.as_str().parse().map_err(|_| MongoError::Unsupported {
                message: format!("watermark {d} is not a decimal128"),
                hint: None,
            })?)
        }
        other => {
            return Err(MongoError::Unsupported {
                message: format!("a {other:?} cannot be a change_detection_column watermark"),
                hint: Some("use a date, number or string field that every write updates".into()),
            })
        }
    })
}

/// A document's place in a polling position: its `_id` as canonical Extended JSON,
/// which keeps the BSON type (the destination key's text form does not: `"1"` and `1`
/// share it).
fn position_key(id: &Bson) -> warp_core::Key {
    vec![Value::Text(id.clone().into_canonical_extjson().to_string())]
}

struct Poller {
    coll: Collection<Document>,
    column: String,
    decoder: Decoder,
    at: Watermark,
    rows: usize,
}

/// Polls forever from `from`, one fragment per poll (a heartbeat when nothing changed).
pub fn stream(
    coll: Collection<Document>,
    column: String,
    decoder: Decoder,
    from: Watermark,
    pace: Pace,
) -> BoxStream<'static, warp_core::Result<StreamFragment>> {
    let poller = Poller {
        coll,
        column,
        decoder,
        at: Watermark {
            reread_ties: true,
            ..from
        },
        rows: pace.rows,
    };
    warp_core::poll_every(poller, pace.interval)
}

#[async_trait::async_trait]
impl warp_core::Poll for Poller {
    async fn poll(&mut self) -> warp_core::Result<Vec<StreamFragment>> {
        // From the watermark's value, read again: a later write may share it (a date the
        // writer sets, to the millisecond) with a smaller `_id`; the ties delivered are
        // skipped by `_id`.
        let filter = match &self.at.value {
            Some(w) => doc! { &self.column: { "$gte": bound(w)? } },
            None => doc! { &self.column: { "$exists": true, "$ne": null } },
        };
        let limit = (self.rows + self.at.seen_at.len()) as i64;
        let docs: Vec<Document> = self
            .coll
            .find(filter)
            .sort(doc! { &self.column: 1, ID: 1 })
            .limit(limit)
            .await
            .context("poll")?
            .try_collect()
            .await
            .context("poll")?;
        let mut batch = PollBatch::new(self.at.clone());
        for d in docs {
            let (Some(id), Some(value)) = (d.get(ID), d.get(&self.column)) else {
                continue;
            };
            if !batch.admit(&convert::value(value, WATERMARK_UUIDS), &position_key(id))? {
                continue;
            }
            // Polling cannot tell an insert from an update: both upsert.
            let key = self.decoder.key(id);
            for change in self.decoder.document(Operation::Update, key, &d, None) {
                batch.push(change);
            }
        }
        let (at, fragments) = batch.finish()?;
        self.at = at;
        Ok(fragments)
    }
}
