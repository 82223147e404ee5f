//! Table leases and replica membership in the metadata schema (docs/deploy.md, Scaling out). Expiry is judged
//! by the database clock (`now()`), so replicas' clocks never matter.
//!
//! Locking: a data transaction checks its token at commit and holds its lease row
//! `FOR KEY SHARE` from that check to `COMMIT` (see `Checkpoints::check_fence`). Renewal
//! is a plain update, which that lock does not block; acquisition locks the row
//! `FOR UPDATE`, which waits for those commits in flight, so once a new token is issued
//! the old holder can no longer commit. The wait is bounded (`lock_timeout`), and so is
//! holding: a holder frozen inside its commit (or inside an acquisition) loses its
//! transaction after half the lease validity (`idle_in_transaction_session_timeout`),
//! so a takeover waits a round or two, never for the frozen process to wake. Before this
//! bound a replica stopped inside that few-millisecond window blocked its tables'
//! takeover until it was resumed (seen in the three-replica test, about 1 run in 10).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, PgPool};
use warp_core::{FencingToken, Lease, LeaseStore, TableKey};

use crate::checkpoint::Checkpoints;
use crate::error::{Context, Result};
use crate::PostgresSink;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

async fn join(
    pool: &PgPool,
    m: &str,
    schema: &str,
    owner: &str,
    validity: Duration,
) -> Result<Vec<String>> {
    let upsert = format!(
        "INSERT INTO {m}.members AS r (schema_name, owner, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))
         ON CONFLICT (schema_name, owner) DO UPDATE SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at"
    );
    sqlx::query(AssertSqlSafe(upsert))
        .bind(schema)
        .bind(owner)
        .bind(secs(validity))
        .execute(pool)
        .await
        .context("record replica heartbeat")?;
    let live = format!(
        "SELECT owner FROM {m}.members WHERE schema_name = $1 AND expires_at > now() ORDER BY owner COLLATE \"C\""
    );
    sqlx::query_scalar(AssertSqlSafe(live))
        .bind(schema)
        .fetch_all(pool)
        .await
        .context("read live replicas")
}

async fn acquire(
    pool: &PgPool,
    checkpoints: &Checkpoints,
    key: &TableKey,
    owner: &str,
    validity: Duration,
) -> Result<Option<FencingToken>> {
    let m = &checkpoints.m;
    checkpoints.bound_locks_by(validity);
    let mut tx = pool.begin().await.context("begin lease acquisition")?;
    // Waiting for the lock and holding it are both bounded, so neither a frozen holder
    // nor a frozen acquirer stalls the table for longer than that.
    let wait = format!(
        "SET LOCAL lock_timeout = {}; {}",
        (validity / 2).as_millis().max(1),
        checkpoints.idle_bound()
    );
    sqlx::raw_sql(AssertSqlSafe(wait))
        .execute(&mut *tx)
        .await
        .context("bound the lease wait")?;
    // Waits for the holder's commits in flight (they hold `FOR KEY SHARE`); whether the
    // lease is free is decided by the upsert below, on the row as locked.
    let lock =
        format!("SELECT 1 FROM {m}.leases WHERE schema_name = $1 AND table_name = $2 FOR UPDATE");
    match sqlx::query(AssertSqlSafe(lock))
        .bind(&key.schema)
        .bind(&key.table)
        .fetch_optional(&mut *tx)
        .await
        .context("lock lease")
    {
        Ok(_) => {}
        // lock_not_available: the holder is inside a commit; try again next round.
        Err(e) if e.code() == Some("55P03") => return Ok(None),
        Err(e) => return Err(e),
    }
    let take = format!(
        "INSERT INTO {m}.leases AS l (schema_name, table_name, owner, fencing_token, expires_at)
         VALUES ($1, $2, $3, 1, now() + make_interval(secs => $4))
         ON CONFLICT (schema_name, table_name) DO UPDATE
         SET fencing_token = l.fencing_token + 1, owner = EXCLUDED.owner,
             acquired_at = now(), renewed_at = now(), expires_at = EXCLUDED.expires_at
         -- Free, lapsed or ours; also keeps a row another replica inserted first.
         WHERE l.owner = EXCLUDED.owner OR l.owner = '' OR l.expires_at IS NULL OR l.expires_at <= now()
         RETURNING fencing_token"
    );
    let token: Option<i64> = sqlx::query_scalar(AssertSqlSafe(take))
        .bind(&key.schema)
        .bind(&key.table)
        .bind(owner)
        .bind(secs(validity))
        .fetch_optional(&mut *tx)
        .await
        .context("take lease")?;
    tx.commit().await.context("commit lease")?;
    Ok(token.map(|t| FencingToken(u64::try_from(t).unwrap_or(0))))
}

#[async_trait]
impl LeaseStore for PostgresSink {
    async fn join(
        &self,
        schema: &str,
        owner: &str,
        validity: Duration,
    ) -> warp_core::Result<Vec<String>> {
        Ok(join(
            &self.inner.pool,
            &self.inner.checkpoints.m,
            schema,
            owner,
            validity,
        )
        .await?)
    }

    async fn leave(&self, schema: &str, owner: &str) -> warp_core::Result<()> {
        let sql = format!(
            "DELETE FROM {}.members WHERE schema_name = $1 AND owner = $2",
            self.inner.checkpoints.m
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(schema)
            .bind(owner)
            .execute(&self.inner.pool)
            .await
            .context("withdraw replica")?;
        Ok(())
    }

    async fn acquire(
        &self,
        table: &TableKey,
        owner: &str,
        validity: Duration,
    ) -> warp_core::Result<Option<FencingToken>> {
        Ok(acquire(
            &self.inner.pool,
            &self.inner.checkpoints,
            table,
            owner,
            validity,
        )
        .await?)
    }

    async fn renew(
        &self,
        schema: &str,
        owner: &str,
        validity: Duration,
    ) -> warp_core::Result<Vec<String>> {
        let sql = format!(
            "UPDATE {}.leases SET renewed_at = now(), expires_at = now() + make_interval(secs => $3)
             WHERE schema_name = $1 AND owner = $2 RETURNING table_name",
            self.inner.checkpoints.m
        );
        let held: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(schema)
            .bind(owner)
            .bind(secs(validity))
            .fetch_all(&self.inner.pool)
            .await
            .context("renew leases")?;
        Ok(held)
    }

    async fn leases(&self, schema: &str) -> warp_core::Result<Vec<Lease>> {
        let sql = format!(
            "SELECT table_name, owner, owner <> '' AND expires_at IS NOT NULL AND expires_at > now()
             FROM {}.leases WHERE schema_name = $1",
            self.inner.checkpoints.m
        );
        let rows: Vec<(String, String, bool)> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(schema)
            .fetch_all(&self.inner.pool)
            .await
            .context("read leases")?;
        Ok(rows
            .into_iter()
            .map(|(table, owner, live)| Lease { table, owner, live })
            .collect())
    }

    async fn release(&self, table: &TableKey, owner: &str) -> warp_core::Result<()> {
        let sql = format!(
            "UPDATE {}.leases SET owner = '', expires_at = now()
             WHERE schema_name = $1 AND table_name = $2 AND owner = $3",
            self.inner.checkpoints.m
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&table.schema)
            .bind(&table.table)
            .bind(owner)
            .execute(&self.inner.pool)
            .await
            .context("hand back lease")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sqlx::postgres::PgPoolOptions;
    use warp_core::Sink;

    use super::*;

    /// Against the PostgreSQL peer (`WARP_TEST_PG_URL`, as every sink test).
    #[tokio::test]
    async fn a_holder_frozen_inside_its_commit_loses_its_transaction_not_the_table() {
        let url = std::env::var("WARP_TEST_PG_URL")
            .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap();
        sqlx::raw_sql("DROP SCHEMA IF EXISTS t_frozen_meta CASCADE")
            .execute(&pool)
            .await
            .unwrap();
        let sink = PostgresSink::with_pool(pool.clone(), "t_frozen_meta");
        sink.prepare().await.unwrap();
        let key = TableKey {
            schema: "s".into(),
            table: "t".into(),
        };
        let validity = Duration::from_millis(1_000);
        let old = sink
            .acquire(&key, "frozen", validity)
            .await
            .unwrap()
            .unwrap();

        // The holder passes its fencing check at commit and freezes before `COMMIT`.
        let mut frozen = pool.acquire().await.unwrap();
        sqlx::raw_sql("BEGIN").execute(&mut *frozen).await.unwrap();
        let checked = sink
            .inner
            .checkpoints
            .check_fence(&mut frozen, &key, old, true)
            .await
            .unwrap();
        assert_eq!(checked, None, "the holder's token is current");

        // Once the lease lapses another replica takes the table within a few rounds,
        // instead of waiting for the frozen process to wake.
        tokio::time::sleep(validity).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let new = loop {
            if let Some(token) = sink.acquire(&key, "next", validity).await.unwrap() {
                break token;
            }
            assert!(
                Instant::now() < deadline,
                "the frozen commit kept the lease row locked"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(new.0 > old.0, "a new token: {new:?} after {old:?}");
        // And the frozen commit can no longer land: its session was ended.
        assert!(sqlx::raw_sql("COMMIT").execute(&mut *frozen).await.is_err());
    }
}
