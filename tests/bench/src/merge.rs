//! The floor of any replicator that ships row images: PostgreSQL merging the after-images
//! of the same change workload, pre-fetched before the timing, in 5,000-change batches
//! (upserted, deleted by key), with no client work between the statements at all — two
//! ways: staged through a temporary table by binary `COPY`, and bound as one array per
//! column and read with `UNNEST` (no staging table). A log-based replicator receives images, not the
//! source's statements, so it cannot apply a change more cheaply than this; PostgreSQL's
//! own set-based apply (`mysql::postgres_applies`) computes each new row in place and
//! ships nothing.

use std::time::Instant;

use futures::StreamExt;
use sqlx::AssertSqlSafe;

use crate::{sink, Measurement};

/// Ids per batch in each third of the workload: 1,667 updates, inserts and deletes.
const GROUP: i64 = 1_667;
const COLUMNS: [&str; 11] = [
    "customer_id",
    "status",
    "sku",
    "title",
    "amount",
    "quantity",
    "created_at",
    "updated_at",
    "attributes",
    "note",
    "priority",
];

/// How a batch's images reach PostgreSQL.
#[derive(Clone, Copy)]
enum Via {
    /// A temporary table per batch, filled by binary `COPY` (what the sink does).
    Stage,
    /// One bound array per column, read by `UNNEST` in the upsert.
    Unnest,
}

/// One batch: the after-images of its updates and inserts, the keys of its deletes.
struct Batch {
    images: Images,
    deleted: Vec<i64>,
}

enum Images {
    Copy(Vec<u8>),
    Columns(Box<Columns>),
}

/// The images column by column (`amount` and `attributes` as text, cast by the server).
#[derive(Default)]
struct Columns {
    id: Vec<i64>,
    customer_id: Vec<i32>,
    status: Vec<i16>,
    sku: Vec<String>,
    title: Vec<String>,
    amount: Vec<String>,
    quantity: Vec<i32>,
    created_at: Vec<chrono::NaiveDateTime>,
    updated_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    attributes: Vec<String>,
    note: Vec<Option<String>>,
    priority: Vec<i16>,
}

type ImageRow = (
    i64,
    i32,
    i16,
    String,
    String,
    String,
    i32,
    chrono::NaiveDateTime,
    Option<chrono::DateTime<chrono::Utc>>,
    String,
    Option<String>,
    i16,
);

impl Columns {
    fn push(&mut self, r: ImageRow) {
        self.id.push(r.0);
        self.customer_id.push(r.1);
        self.status.push(r.2);
        self.sku.push(r.3);
        self.title.push(r.4);
        self.amount.push(r.5);
        self.quantity.push(r.6);
        self.created_at.push(r.7);
        self.updated_at.push(r.8);
        self.attributes.push(r.9);
        self.note.push(r.10);
        self.priority.push(r.11);
    }
}

/// Both ways, each on a fresh copy of the rows. `applied` holds every changed row's final
/// image (the workload touches each key once: ids `1..=third` updated,
/// `rows+1..=rows+third` inserted, `third+1..=2·third` deleted); `orders` the rows before
/// the changes.
pub async fn postgres_merges_images(
    pg: &sqlx::PgPool,
    rows: u64,
    changes: u64,
) -> Result<Vec<Measurement>, Box<dyn std::error::Error>> {
    let mut lines = Vec::new();
    for via in [Via::Stage, Via::Unnest] {
        lines.push(merge(pg, rows, changes, via).await?);
    }
    Ok(lines)
}

async fn merge(
    pg: &sqlx::PgPool,
    rows: u64,
    changes: u64,
    via: Via,
) -> Result<Measurement, Box<dyn std::error::Error>> {
    let third = i64::try_from(changes / 3)?;
    let rows = i64::try_from(rows)?;
    crate::mysql::copy_of_orders(pg, "merged").await?;
    let batches = prefetch(pg, rows, third, via).await?;

    let set = COLUMNS
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let conflict = format!("ON CONFLICT (id) DO UPDATE SET {set}");
    let upsert = match via {
        Via::Stage => {
            format!("INSERT INTO bench_my_raw.merged SELECT * FROM pg_temp.stage {conflict}")
        }
        Via::Unnest => format!(
            "INSERT INTO bench_my_raw.merged SELECT id, customer_id, status, sku, title, \
             amount::numeric, quantity, created_at, updated_at, attributes::jsonb, note, priority \
             FROM unnest($1::int8[], $2::int4[], $3::int2[], $4::text[], $5::text[], $6::text[], \
             $7::int4[], $8::timestamp[], $9::timestamptz[], $10::text[], $11::text[], $12::int2[]) \
             AS u(id, {}) {conflict}",
            COLUMNS.join(", ")
        ),
    };
    sink::settle(pg).await?;
    let started = Instant::now();
    let mut merged = 0u64;
    for batch in batches {
        let mut tx = pg.begin().await?;
        merged += match batch.images {
            Images::Copy(bytes) => {
                sqlx::raw_sql("CREATE TEMP TABLE stage (LIKE bench_my_raw.merged) ON COMMIT DROP")
                    .execute(&mut *tx)
                    .await?;
                let mut copy = tx
                    .copy_in_raw("COPY pg_temp.stage FROM STDIN (FORMAT binary)")
                    .await?;
                copy.send(bytes).await?;
                let staged = copy.finish().await?;
                sqlx::query(AssertSqlSafe(upsert.clone()))
                    .execute(&mut *tx)
                    .await?;
                staged
            }
            Images::Columns(c) => sqlx::query(AssertSqlSafe(upsert.clone()))
                .bind(c.id)
                .bind(c.customer_id)
                .bind(c.status)
                .bind(c.sku)
                .bind(c.title)
                .bind(c.amount)
                .bind(c.quantity)
                .bind(c.created_at)
                .bind(c.updated_at)
                .bind(c.attributes)
                .bind(c.note)
                .bind(c.priority)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
        };
        merged += sqlx::query("DELETE FROM bench_my_raw.merged WHERE id = ANY($1)")
            .bind(&batch.deleted)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
    }
    let took = started.elapsed();
    let expected = u64::try_from(third * 3)?;
    if merged != expected {
        return Err(format!("merged {merged} changes, expected {expected}").into());
    }
    // The merge must end where PostgreSQL's own apply did, row for row.
    let differ: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ((TABLE bench_my_raw.merged EXCEPT TABLE bench_my_raw.applied) \
         UNION ALL (TABLE bench_my_raw.applied EXCEPT TABLE bench_my_raw.merged)) d",
    )
    .fetch_one(pg)
    .await?;
    if differ != 0 {
        return Err(format!("the merge differs from the applied copy in {differ} rows").into());
    }
    let how = match via {
        Via::Stage => "staged by binary COPY",
        Via::Unnest => "bound arrays, UNNEST",
    };
    Ok(Measurement {
        name: format!("PostgreSQL merging the same changes' row images ({how}, no client work)"),
        rows: merged,
        bytes: 0,
        took,
    })
}

/// Every batch's images, read from `applied` before the timing.
async fn prefetch(
    pg: &sqlx::PgPool,
    rows: i64,
    third: i64,
    via: Via,
) -> Result<Vec<Batch>, Box<dyn std::error::Error>> {
    let mut conn = pg.acquire().await?;
    let mut batches = Vec::new();
    let mut id = 1;
    while id <= third {
        let end = (id + GROUP - 1).min(third);
        let filter = format!(
            "WHERE id BETWEEN {id} AND {end} OR id BETWEEN {} AND {} ORDER BY id",
            rows + id,
            rows + end
        );
        let images = match via {
            Via::Stage => {
                let mut images = Vec::new();
                let mut data = conn
                    .copy_out_raw(&format!(
                        "COPY (SELECT * FROM bench_my_raw.applied {filter}) TO STDOUT (FORMAT binary)"
                    ))
                    .await?;
                while let Some(bytes) = data.next().await {
                    images.extend_from_slice(&bytes?);
                }
                Images::Copy(images)
            }
            Via::Unnest => {
                let found: Vec<ImageRow> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT id, customer_id, status, sku, title, amount::text, quantity, created_at, \
                     updated_at, attributes::text, note, priority FROM bench_my_raw.applied {filter}"
                )))
                .fetch_all(&mut *conn)
                .await?;
                let mut columns = Columns::default();
                for r in found {
                    columns.push(r);
                }
                Images::Columns(Box::new(columns))
            }
        };
        batches.push(Batch {
            images,
            deleted: (third + id..=third + end).collect(),
        });
        id = end + 1;
    }
    Ok(batches)
}
