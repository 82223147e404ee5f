//! PostgreSQL as the control store (checkpoints live beside the rows, so a batch and its
//! checkpoint commit together) and as the destination side of verification.

use async_trait::async_trait;
use warp_core::control::Targets;
use warp_core::{
    ColumnType, ControlStore, DeadLetter, DeadLetterFilter, DeploymentStatus, Fix, Key, LandedRow,
    LandedRows, LandingVersion, Repaired, ReplayReport, Row, Signal, SignalKind, TableSchema,
    TableStatus, Target,
};

use crate::error::Context;
use crate::{read, signals, status, PostgresSink};

#[async_trait]
impl ControlStore for PostgresSink {
    async fn record_status(&self, owner: &str, tables: &[TableStatus]) -> warp_core::Result<()> {
        Ok(status::record(self.pool(), self.metadata_schema(), owner, tables).await?)
    }

    async fn read_status(&self) -> warp_core::Result<Option<DeploymentStatus>> {
        Ok(Some(
            status::deployment(self.pool(), self.metadata_schema()).await?,
        ))
    }

    async fn take_signals(
        &self,
        schema: &str,
        tables: &[String],
    ) -> warp_core::Result<Vec<Signal>> {
        Ok(signals::take(self.pool(), self.metadata_schema(), schema, tables).await?)
    }

    async fn send_signal(
        &self,
        schema: &str,
        table: Option<&str>,
        kind: &SignalKind,
    ) -> warp_core::Result<i64> {
        Ok(signals::send(self.pool(), self.metadata_schema(), schema, table, kind).await?)
    }

    async fn dead_letters(&self, filter: &DeadLetterFilter) -> warp_core::Result<Vec<DeadLetter>> {
        Ok(PostgresSink::dead_letters(self, filter).await?)
    }

    async fn discard_dead_letters(&self, filter: &DeadLetterFilter) -> warp_core::Result<u64> {
        Ok(PostgresSink::discard_dead_letters(self, filter).await?)
    }

    async fn replay_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        targets: Targets<'_>,
    ) -> warp_core::Result<ReplayReport> {
        Ok(PostgresSink::replay_dead_letters(self, filter, targets).await?)
    }
}

#[async_trait]
impl LandedRows for PostgresSink {
    async fn landed_schema(&self, target: &Target) -> warp_core::Result<TableSchema> {
        Ok(PostgresSink::landed_schema(self, target).await?)
    }

    async fn landing_version(&self, target: &Target) -> warp_core::Result<LandingVersion> {
        let mut conn = self.pool().acquire().await.context("connect")?;
        let probe = crate::landed::Landed::location(target);
        Ok(crate::landing::read(&mut conn, self.metadata_schema(), &probe).await?)
    }

    async fn rows_with_keys(
        &self,
        target: &Target,
        schema: &TableSchema,
        keys: &[Key],
    ) -> warp_core::Result<Vec<LandedRow>> {
        Ok(read::rows_with_keys(self.pool(), target, schema, keys).await?)
    }

    async fn live_key_page(
        &self,
        target: &Target,
        schema: &TableSchema,
        after: Option<&Key>,
        limit: usize,
    ) -> warp_core::Result<Vec<(Key, i64)>> {
        Ok(read::live_key_page(self.pool(), target, schema, after, limit).await?)
    }

    async fn repair(
        &self,
        target: &Target,
        schema: &TableSchema,
        fixes: &[Fix],
    ) -> warp_core::Result<Repaired> {
        Ok(PostgresSink::repair(self, target, schema, fixes).await?)
    }

    fn canonical(&self, row: &Row, types: &[ColumnType]) -> Result<String, String> {
        crate::verify::canonical(row, types)
    }
}
