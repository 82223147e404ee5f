//! The `timestamp` strategy, for deployments without change streams (standalone
//! servers, some MongoDB-compatible services): poll documents with
//! `change_detection_column >= watermark` in (column, `_id`) order. Deletes are not
//! visible to polling (docs/mongodb.md).

use bson::{doc, Bson, Document};
use chrono::Utc;
use futures::stream::{BoxStream, TryStreamExt};
use mongodb::Collection;
use warp_core::{Commit, Operation, Pace, StreamFragment, Value, Watermark};

use crate::changes::Decoder;
use crate::convert;
use crate::error::{Context, MongoError, Result};
use crate::shape::ID;
use crate::snapshot::key_of;

/// Documents read per poll.
/// Documents per poll when `stream_batch_size` is unset.
pub const PAGE: usize = 5_000;

/// The current highest value of `column` (where a snapshot's stream starts), with the
/// keys of the documents at exactly that value: the snapshot copies them, so the first
/// poll must not deliver them again.
pub async fn current(coll: &Collection<Document>, column: &str) -> Result<Watermark> {
    let top = coll
        .find_one(doc! { column: { "$exists": true, "$ne": null } })
        .sort(doc! { column: -1 })
        .await
        .context("read watermark")?;
    let Some(value) = top.as_ref().and_then(|d| d.get(column)).cloned() else {
        return Ok(Watermark::at(None));
    };
    let mut w = Watermark::at(Some(convert::value(&value)));
    let mut tied = coll
        .find(doc! { column: value })
        .projection(doc! { ID: 1 })
        .await
        .context("read watermark")?;
    while let Some(d) = tied.try_next().await.context("read watermark")? {
        if let Some(id) = d.get(ID) {
            w.keys_at.push(key_of(id));
        }
    }
    Ok(w)
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
        at: from,
        rows: pace.rows,
    };
    warp_core::poll_every(poller, pace.interval)
}

#[async_trait::async_trait]
impl warp_core::Poll for Poller {
    async fn poll(&mut self) -> warp_core::Result<StreamFragment> {
        let filter = match &self.at.value {
            Some(w) => doc! { &self.column: { "$gte": bound(w)? } },
            None => doc! { &self.column: { "$exists": true, "$ne": null } },
        };
        let limit = (self.rows + self.at.keys_at.len()) as i64;
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
        let mut changes = Vec::new();
        let mut at = self.at.clone();
        for d in docs {
            let (Some(id), Some(value)) = (d.get(ID), d.get(&self.column)) else {
                continue;
            };
            if !at.admit(&convert::value(value), &key_of(id)) {
                continue;
            }
            // Polling cannot tell an insert from an update: both upsert.
            changes.extend(
                self.decoder
                    .document(Operation::Update, key_of(id), &d, None),
            );
        }
        self.at = at;
        let commit = Commit {
            position: self.at.encode()?,
            source_ts: Some(Utc::now()),
        };
        Ok(StreamFragment::transaction(changes, commit))
    }
}
