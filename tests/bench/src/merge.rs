//! The floor of any replicator that ships row images: PostgreSQL merging the after-images
//! of the same change workload, pre-fetched in binary `COPY` form, in 5,000-change
//! batches (staged through a temporary table, upserted, deleted by key), with no client
//! work between the statements at all. A log-based replicator receives images, not the
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

/// One batch: the after-images of its updates and inserts, the keys of its deletes.
struct Batch {
    images: Vec<u8>,
    deleted: Vec<i64>,
}

/// `applied` holds every changed row's final image (the workload touches each key once:
/// ids `1..=third` updated, `rows+1..=rows+third` inserted, `third+1..=2·third` deleted);
/// `orders` the rows before the changes.
pub async fn postgres_merges_images(
    pg: &sqlx::PgPool,
    rows: u64,
    changes: u64,
) -> Result<Measurement, Box<dyn std::error::Error>> {
    let third = i64::try_from(changes / 3)?;
    let rows = i64::try_from(rows)?;
    crate::mysql::copy_of_orders(pg, "merged").await?;
    let batches = prefetch(pg, rows, third).await?;

    let set = COLUMNS
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let upsert = format!(
        "INSERT INTO bench_my_raw.merged SELECT * FROM pg_temp.stage ON CONFLICT (id) DO UPDATE SET {set}"
    );
    sink::settle(pg).await?;
    let started = Instant::now();
    let mut merged = 0u64;
    for batch in batches {
        let mut tx = pg.begin().await?;
        sqlx::raw_sql("CREATE TEMP TABLE stage (LIKE bench_my_raw.merged) ON COMMIT DROP")
            .execute(&mut *tx)
            .await?;
        let mut copy = tx
            .copy_in_raw("COPY pg_temp.stage FROM STDIN (FORMAT binary)")
            .await?;
        copy.send(batch.images).await?;
        merged += copy.finish().await?;
        sqlx::query(AssertSqlSafe(upsert.clone()))
            .execute(&mut *tx)
            .await?;
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
    Ok(Measurement {
        name: "PostgreSQL merging the same changes' row images (binary COPY, no client work)"
            .into(),
        rows: merged,
        bytes: 0,
        took,
    })
}

/// Every batch's images, read from `applied` in binary `COPY` form before the timing.
async fn prefetch(
    pg: &sqlx::PgPool,
    rows: i64,
    third: i64,
) -> Result<Vec<Batch>, Box<dyn std::error::Error>> {
    let mut conn = pg.acquire().await?;
    let mut batches = Vec::new();
    let mut id = 1;
    while id <= third {
        let end = (id + GROUP - 1).min(third);
        let mut images = Vec::new();
        let mut data = conn
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM bench_my_raw.applied WHERE id BETWEEN {id} AND {end} \
                 OR id BETWEEN {} AND {} ORDER BY id) TO STDOUT (FORMAT binary)",
                rows + id,
                rows + end
            ))
            .await?;
        while let Some(bytes) = data.next().await {
            images.extend_from_slice(&bytes?);
        }
        drop(data);
        batches.push(Batch {
            images,
            deleted: (third + id..=third + end).collect(),
        });
        id = end + 1;
    }
    Ok(batches)
}
