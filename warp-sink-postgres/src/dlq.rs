//! Dead letters: list, discard, and replay — re-applying a stored change once its cause
//! is fixed. A replay never overwrites a newer change: if the destination row carries a
//! later source time than the stored change, the entry is marked superseded instead.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{AssertSqlSafe, PgConnection};
use warp_core::{
    ChangeEvent, Column, DeadLetter, DeadLetterStatus, Operation, ReplayReport, Row, TableId,
    TableSchema, Target, Value,
};

use crate::apply::{merge_statements, unit, Kinds, Merge, STAGE_EXTRA};
use crate::error::{Context, Result, SinkError};
use crate::ident::quote;
use crate::landed::{Landed, SOURCE_TS};
use crate::transaction::PgTransaction;
use crate::{PostgresSink, TableEntry};

/// Which entries a command acts on.
pub type Filter = warp_core::DeadLetterFilter;

/// `FROM … WHERE …` of the entries `f` names, with its parameters.
fn filter_sql(f: &Filter, m: &str) -> (String, Vec<String>) {
    let mut conds = Vec::new();
    let mut params = Vec::new();
    if !f.ids.is_empty() {
        let ids: Vec<String> = f.ids.iter().map(i64::to_string).collect();
        conds.push(format!("id IN ({})", ids.join(", ")));
    }
    for (col, v) in [
        ("schema_name", &f.schema),
        ("table_name", &f.table),
        ("status", &f.status.map(|s| s.as_str().to_owned())),
    ] {
        if let Some(v) = v {
            params.push(v.clone());
            conds.push(format!("{col} = ${}", params.len()));
        }
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    (format!("FROM {m}.dead_letter_queue{filter}"), params)
}

type EntryRow = (
    i64,
    String,
    String,
    String,
    String,
    i32,
    Option<serde_json::Value>,
    DateTime<Utc>,
    serde_json::Value,
);

/// What a stored payload says about itself besides the change.
#[derive(Deserialize)]
struct PayloadFlags {
    /// NUL characters were replaced to store it: replaying it would write altered data.
    #[serde(default)]
    nul_replaced: bool,
}

impl PostgresSink {
    pub async fn dead_letters(&self, filter: &Filter) -> Result<Vec<DeadLetter>> {
        let (from, params) = filter_sql(filter, &quote(self.metadata_schema()));
        let sql = format!(
            "SELECT id, schema_name, table_name, error, status, attempts, source_position, created_at, payload {from} ORDER BY id"
        );
        let mut q = sqlx::query_as::<_, EntryRow>(AssertSqlSafe(sql));
        for p in params {
            q = q.bind(p);
        }
        let rows = q
            .fetch_all(self.pool())
            .await
            .context("list dead letters")?;
        rows.into_iter()
            .map(
                |(
                    id,
                    schema,
                    table,
                    error,
                    status,
                    attempts,
                    source_position,
                    created_at,
                    payload,
                )| {
                    let status = status
                        .parse()
                        .map_err(|e| SinkError::Invalid(format!("dead letter {id}: status {e}")))?;
                    Ok(DeadLetter {
                        id,
                        schema,
                        table,
                        error,
                        status,
                        attempts,
                        source_position,
                        created_at,
                        payload,
                    })
                },
            )
            .collect()
    }

    /// Marks matching pending entries `discarded`; returns how many.
    pub async fn discard_dead_letters(&self, filter: &Filter) -> Result<u64> {
        let mut filter = filter.clone();
        filter.status = Some(DeadLetterStatus::Pending);
        let (from, params) = filter_sql(&filter, &quote(self.metadata_schema()));
        let sql = format!(
            "UPDATE {m}.dead_letter_queue SET status = 'discarded', updated_at = now() WHERE id IN (SELECT id {from})",
            m = quote(self.metadata_schema())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for p in params {
            q = q.bind(p);
        }
        Ok(q.execute(self.pool())
            .await
            .context("discard dead letters")?
            .rows_affected())
    }

    /// Re-applies matching pending entries; `target` maps (schema, table) to where the
    /// table lands (from the configuration).
    pub async fn replay_dead_letters(
        &self,
        filter: &Filter,
        target: impl Fn(&str, &str) -> Option<Target>,
    ) -> Result<ReplayReport> {
        let mut filter = filter.clone();
        filter.status = Some(DeadLetterStatus::Pending);
        let mut report = ReplayReport::default();
        for entry in self.dead_letters(&filter).await? {
            let Some(target) = target(&entry.schema, &entry.table) else {
                report.failed.push((
                    entry.id,
                    format!(
                        "{}.{} is not in the configuration",
                        entry.schema, entry.table
                    ),
                ));
                continue;
            };
            let outcome = self.replay_one(&target, &entry).await?;
            match outcome {
                Outcome::Replayed => report.replayed.push(entry.id),
                Outcome::Superseded => report.superseded.push(entry.id),
                Outcome::Failed(e) => report.failed.push((entry.id, e)),
            }
        }
        Ok(report)
    }

    async fn replay_one(&self, target: &Target, entry: &DeadLetter) -> Result<Outcome> {
        let flags = PayloadFlags::deserialize(&entry.payload)
            .map_err(|e| SinkError::Invalid(format!("unreadable dead-letter payload: {e}")))?;
        if flags.nul_replaced {
            let why = "the row holds NUL characters, which PostgreSQL cannot store; fix it at the source or discard it";
            return self
                .mark(entry.id, DeadLetterStatus::Pending, Some(why))
                .await
                .map(|()| Outcome::Failed(why.to_owned()));
        }
        let schema = self.landed_schema(target).await?;
        let landed = Landed::new(target, &schema)?;
        let event = decode_payload(&entry.payload, &landed)?;
        let mut tx = crate::connection::TxConnection::begin(self.pool()).await?;
        let inner = std::sync::Arc::clone(&self.inner);
        let mut ptx = PgTransaction::new(
            inner,
            tx,
            target.clone(),
            warp_core::FencingToken(0),
            TableEntry::new(landed, schema),
        );
        let outcome = ptx.replay(event).await?;
        tx = ptx.into_inner();
        let m = quote(self.metadata_schema());
        let (status, error) = match &outcome {
            Outcome::Replayed => (DeadLetterStatus::Replayed, None),
            Outcome::Superseded => (
                DeadLetterStatus::Discarded,
                Some("superseded: the destination already has a newer change".to_owned()),
            ),
            Outcome::Failed(e) => (DeadLetterStatus::Pending, Some(e.clone())),
        };
        let sql = format!(
            "UPDATE {m}.dead_letter_queue SET status = $2, attempts = attempts + 1, error = COALESCE($3, error), updated_at = now() WHERE id = $1"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(entry.id)
            .bind(status.as_str())
            .bind(error)
            .execute(&mut *tx)
            .await
            .context("update dead letter")?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn mark(&self, id: i64, status: DeadLetterStatus, error: Option<&str>) -> Result<()> {
        let sql = format!(
            "UPDATE {}.dead_letter_queue SET status = $2, attempts = attempts + 1, error = COALESCE($3, error), updated_at = now() WHERE id = $1",
            quote(self.metadata_schema())
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(status.as_str())
            .bind(error)
            .execute(self.pool())
            .await
            .context("update dead letter")?;
        Ok(())
    }

    /// The landing table's current shape, from the catalog (data columns only).
    /// The landing table's shape as the catalog has it (names, types, key), bookkeeping
    /// columns left out.
    pub async fn landed_schema(&self, target: &Target) -> Result<TableSchema> {
        let probe = Landed::location(target);
        let mut conn = self.pool().acquire().await.context("connect")?;
        let existing = crate::ddl::existing_columns(&mut conn, &probe)
            .await?
            .ok_or_else(|| {
                SinkError::Invalid(format!("{} does not exist at the destination", probe.table))
            })?;
        let key: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        )
        .bind(&probe.table)
        .fetch_all(&mut *conn)
        .await
        .context("read primary key")?;
        Ok(TableSchema {
            id: TableId::new(&target.source.database, &target.source.name),
            columns: existing
                .iter()
                .filter(|e| !probe.is_bookkeeping(&e.name))
                .map(|e| {
                    Column::new(
                        &e.name,
                        crate::types::parse_pg_type(&e.pg_type)
                            .unwrap_or(warp_core::ColumnType::Text { max_len: None }),
                    )
                })
                .collect(),
            primary_key: key,
        })
    }
}

pub(crate) enum Outcome {
    Replayed,
    Superseded,
    Failed(String),
}

/// The stored change (snapshot rows are stored as `{"op": "read", "after": row}`), its
/// rows padded to the table's current width (columns are only ever appended).
fn decode_payload(payload: &serde_json::Value, landed: &Landed) -> Result<ChangeEvent> {
    let mut event: ChangeEvent = match serde_json::from_value(payload.clone()) {
        Ok(e) => e,
        Err(_) => {
            let row: Row = serde_json::from_value(payload["after"].clone())
                .map_err(|e| SinkError::Invalid(format!("unreadable dead-letter payload: {e}")))?;
            ChangeEvent {
                op: Operation::Read,
                key: row.key(&landed.key),
                before: None,
                after: Some(row),
                source_ts: None,
            }
        }
    };
    for row in [&mut event.before, &mut event.after].into_iter().flatten() {
        row.values.resize(landed.columns.len(), Value::Null);
    }
    Ok(event)
}

impl PgTransaction {
    pub(crate) fn into_inner(self) -> crate::connection::TxConnection {
        self.tx
    }

    /// Stages the change, skips it if the destination row is newer, else merges it.
    async fn replay(&mut self, event: ChangeEvent) -> Result<Outcome> {
        let mut line = String::new();
        let types = self.entry.landed.types();
        if let Err(e) =
            crate::transaction::event_line(&self.entry.landed, &types, &event, &mut line)
        {
            return Ok(Outcome::Failed(e));
        }
        let stage = self.stage().await?;
        let landed = self.entry.landed.clone();
        let copy = format!(
            "COPY {stage} ({}, {STAGE_EXTRA}) FROM STDIN",
            landed.column_list()
        );
        let key_match: Vec<String> = landed
            .key_columns()
            .map(|c| format!("t.{0} = s.{0}", c.ident))
            .collect();
        let ts = quote(SOURCE_TS);
        let newer = format!(
            "SELECT EXISTS (SELECT 1 FROM {t} AS t JOIN {stage} AS s ON {} WHERE t.{ts} IS NOT NULL AND (s.{ts} IS NULL OR t.{ts} > s.{ts}))",
            key_match.join(" AND "),
            t = landed.table
        );
        crate::apply::copy(self.conn_mut(), &copy, line.as_bytes()).await?;
        let superseded: bool = sqlx::query_scalar(AssertSqlSafe(newer))
            .fetch_one(self.conn_mut())
            .await
            .context("compare versions")?;
        sqlx::raw_sql(AssertSqlSafe(format!("TRUNCATE {stage}")))
            .execute(self.conn_mut())
            .await
            .context("clear stage")?;
        if superseded {
            return Ok(Outcome::Superseded);
        }
        let merge = match event.op {
            Operation::Read => Merge::Snapshot,
            _ => Merge::Changes(self.target.deletion_strategy, Kinds::ALL),
        };
        let mut statements = merge_statements(&landed, &stage, merge);
        statements.push(format!("TRUNCATE {stage}"));
        Ok(
            match unit(self.conn_mut(), &[(&copy, line.as_bytes())], &statements).await? {
                Ok(()) => Outcome::Replayed,
                Err(e) => Outcome::Failed(e.to_string()),
            },
        )
    }

    fn conn_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}
