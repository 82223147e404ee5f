//! Reading both sides of a table into [`Side`]s.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use warp_core::{
    Backoff, Checkpoint, ColumnType, Destination, Error, Fix, Key, KeyRange, OrdKey, Phase,
    Position, ReadSettings, Repaired, Row, Source, TableSchema, Target,
};

use super::compare::{hash_text, Entry, Side};

/// Source reads are retried while their error is transient (the source busy, e.g. a
/// start position waiting for a prepared XA transaction), as the engine would.
const TRANSIENT_PATIENCE: Duration = Duration::from_secs(60);
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

/// Source rows per page of a range read (a range is read in such pages).
const PAGE_ROWS: usize = 1000;

pub struct Reader<'a> {
    source: &'a dyn Source,
    /// The destination's checkpoints and landed rows.
    dest: &'a Destination,
    target: &'a Target,
    /// The destination's shape: the source is read in it, so columns line up.
    landed: &'a TableSchema,
    /// The table's own read settings (its polled column, page size).
    read: ReadSettings,
    types: Vec<ColumnType>,
    key: Vec<usize>,
    /// Where the table's checkpoint stood when a wait last ran out (replication stopped
    /// or far behind). Later waits return at once while it still stands there: otherwise
    /// every range of a large table would wait the whole `catch_up` (1,000 ranges, 8 h).
    stalled_at: std::sync::Mutex<Option<Option<Position>>>,
}

/// The landing table's shape, and `read` made to read the source as the table was landed
/// (its landing version: MongoDB's `_id` texts).
pub async fn landed_table(
    dest: &Destination,
    target: &Target,
    mut read: ReadSettings,
) -> Result<(TableSchema, ReadSettings), warp_core::Error> {
    let landed = dest.landed.landed_schema(target).await?;
    read.landing = dest.landed.landing_version(target).await?;
    Ok((landed, read))
}

impl<'a> Reader<'a> {
    pub fn new(
        source: &'a dyn Source,
        dest: &'a Destination,
        target: &'a Target,
        landed: &'a TableSchema,
        read: ReadSettings,
    ) -> Result<Self, Error> {
        let key = landed.key_indexes().map_err(|e| Error::Table {
            table: target.key().to_string(),
            message: e.to_string(),
            hint: None,
        })?;
        // Pages of at most `PAGE_ROWS`: memory holds a page of decoded rows at a time.
        let mut read = read;
        read.fetch_rows = Some(read.fetch_rows.map_or(PAGE_ROWS, |n| n.min(PAGE_ROWS)));
        Ok(Self {
            source,
            dest,
            target,
            landed,
            read,
            types: landed
                .columns
                .iter()
                .map(|c| c.column_type.clone())
                .collect(),
            key,
            stalled_at: std::sync::Mutex::new(None),
        })
    }

    fn hash(&self, row: &Row) -> u64 {
        match self.dest.landed.canonical(row, &self.types) {
            Ok(text) => hash_text(&text),
            // A value the destination could not hold differs from whatever it holds.
            Err(e) => hash_text(&format!("unencodable: {e}: {row:?}")),
        }
    }

    /// The table's ranges in the source's key order, each of about `range_rows` rows.
    pub async fn plan(&self, range_rows: usize) -> Result<Vec<KeyRange>, Error> {
        let plan = BACKOFF
            .retry_transient(TRANSIENT_PATIENCE, || {
                self.source
                    .plan_snapshot(self.landed, &self.read, range_rows.max(1))
            })
            .await?;
        Ok(plan.chunks)
    }

    /// Both sides of one range: the source's rows in `range`, and the destination's rows
    /// (live or not) with those keys or with a key in `keep` (keys still in question, whose
    /// source rows are kept: repairs need them). The source is read first; the destination
    /// once its checkpoint has passed the source position taken after that read (or
    /// `catch_up` has gone by), so every change the source read shows has had its chance
    /// to land. Rows the destination holds under keys the source has not are the
    /// [`Reader::held_at_source`] pass's to find.
    pub async fn range(
        &self,
        range: &KeyRange,
        keep: &BTreeSet<OrdKey>,
        catch_up: Duration,
    ) -> Result<(Side, Side), Error> {
        let source = self.source_side(range, keep).await?;
        self.settle_point(catch_up).await?;
        let keys: Vec<Key> = source
            .rows
            .keys()
            .chain(keep.iter())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|k| k.0.clone())
            .collect();
        Ok((source, self.destination_rows(&keys).await?))
    }

    /// Waits until the destination has applied what the source shows now (at most
    /// `catch_up`).
    pub async fn settle_point(&self, catch_up: Duration) -> Result<(), Error> {
        let position = BACKOFF
            .retry_transient(TRANSIENT_PATIENCE, || {
                self.source.current_position(self.landed, &self.read)
            })
            .await?;
        self.wait_until_landed(&position, catch_up).await
    }

    async fn wait_until_landed(&self, position: &Position, limit: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + limit;
        let key = self.target.key();
        loop {
            let at = match self.dest.checkpoints.load(&key).await? {
                Some(Checkpoint {
                    phase: Phase::Streaming { position: at, .. },
                    ..
                }) => Some(at),
                _ => None,
            };
            if let Some(at) = &at {
                if self.source.compare_positions(at, position)? != Ordering::Less {
                    *self.stalled() = None;
                    return Ok(());
                }
            }
            let give_up = {
                let mut stalled = self.stalled();
                // Still where a previous wait gave up: not worth waiting for again.
                let give_up =
                    stalled.as_ref() == Some(&at) || tokio::time::Instant::now() >= deadline;
                if give_up {
                    // Compare anyway; rows still moving are told apart by the re-check.
                    *stalled = Some(at);
                }
                give_up
            };
            if give_up {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stalled(&self) -> std::sync::MutexGuard<'_, Option<Option<Position>>> {
        self.stalled_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn source_side(&self, range: &KeyRange, keep: &BTreeSet<OrdKey>) -> Result<Side, Error> {
        let mut side = Side::default();
        let mut pages = BACKOFF
            .retry_transient(TRANSIENT_PATIENCE, || {
                self.source.read_chunk(self.landed, &self.read, range)
            })
            .await?
            .rows;
        while let Some(page) = pages.next().await {
            let rows = page?.into_rows().ok_or_else(|| Error::Table {
                table: self.target.key().to_string(),
                message: "the source has fields the destination has not landed yet".into(),
                hint: Some("let the replicator catch up, then verify again".into()),
            })?;
            for row in rows {
                let key = OrdKey(row.key(&self.key));
                let entry = Entry {
                    hash: Some(self.hash(&row)),
                    version: None,
                    row: keep.contains(&key).then_some(row),
                };
                side.rows.insert(key, entry);
            }
        }
        Ok(side)
    }

    /// The destination's rows under `keys`, read a page of keys at a time and hashed
    /// before the next page is read (memory holds one page of rows).
    pub async fn destination_rows(&self, keys: &[Key]) -> Result<Side, Error> {
        let mut side = Side::default();
        for page in keys.chunks(PAGE_ROWS) {
            let landed = self
                .dest
                .landed
                .rows_with_keys(self.target, self.landed, page)
                .await?;
            for r in landed {
                let entry = Entry {
                    hash: (!r.deleted).then(|| self.hash(&r.row)),
                    version: Some(r.version),
                    row: None,
                };
                side.rows.insert(OrdKey(r.row.key(&self.key)), entry);
            }
        }
        Ok(side)
    }

    /// Up to `limit` keys of live destination rows after `after`, in the destination's
    /// order, with their versions.
    pub async fn destination_keys(
        &self,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, i64)>, Error> {
        self.dest
            .landed
            .live_key_page(self.target, self.landed, after, limit)
            .await
    }

    /// Writes `fixes` at the destination (see `PostgresSink::repair`).
    pub async fn repair(&self, fixes: &[Fix]) -> Result<Repaired, Error> {
        self.dest
            .landed
            .repair(self.target, self.landed, fixes)
            .await
    }

    /// Which of `keys` the source holds (`None`: the source cannot say).
    pub async fn held_at_source(&self, keys: &[Key]) -> Result<Option<BTreeSet<OrdKey>>, Error> {
        let held = BACKOFF
            .retry_transient(TRANSIENT_PATIENCE, || {
                self.source.existing_keys(self.landed, &self.read, keys)
            })
            .await?;
        Ok(held.map(|keys| keys.into_iter().map(OrdKey).collect()))
    }
}

/// What to write for each confirmed key: the source's row (or its absence) at the
/// destination version last compared.
pub fn fixes(source: &Side, dest: &Side, keys: &BTreeSet<OrdKey>) -> Vec<Fix> {
    keys.iter()
        .filter_map(|k| {
            let seen_version = dest.rows.get(k).and_then(|e| e.version);
            match source.rows.get(k) {
                // Rows are kept for every watched key, and confirmed keys are watched;
                // a row missing here is left alone rather than deleted by mistake.
                Some(e) => e.row.clone().map(|row| Fix {
                    key: k.0.clone(),
                    source: Some(row),
                    seen_version,
                }),
                None => Some(Fix {
                    key: k.0.clone(),
                    source: None,
                    seen_version,
                }),
            }
        })
        .collect()
}
