//! A pooled connection inside one transaction that goes back to the pool only when the
//! transaction ended cleanly. A future dropped mid-statement (a cancelled batch, a chunk
//! stopped by a failing neighbour) can leave the wire protocol half-way, a `COPY` open
//! say, which the pool's release check does not always catch; such a connection is closed
//! instead, and PostgreSQL rolls its transaction back.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::error::{Context, Result};

pub(crate) struct TxConnection {
    conn: PoolConnection<Postgres>,
    ended: bool,
}

impl TxConnection {
    pub async fn begin(pool: &PgPool) -> Result<Self> {
        // Guarded before `BEGIN` is sent: a cancelled `BEGIN` must not return the
        // connection to the pool inside a transaction nobody will end.
        let mut tx = Self {
            conn: pool.acquire().await.context("begin")?,
            ended: false,
        };
        sqlx::raw_sql("BEGIN")
            .execute(&mut *tx.conn)
            .await
            .context("begin")?;
        Ok(tx)
    }

    pub async fn commit(mut self) -> Result<()> {
        sqlx::raw_sql("COMMIT")
            .execute(&mut *self.conn)
            .await
            .context("commit")?;
        self.ended = true;
        Ok(())
    }
}

impl Deref for TxConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for TxConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for TxConnection {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.close_on_drop();
        }
    }
}
