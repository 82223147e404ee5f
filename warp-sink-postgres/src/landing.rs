//! The landing version each landing table was created with (docs/postgres.md, "Metadata
//! schema"): recorded in the transaction that creates the table, so a table and its
//! version appear together; a table an older release created has no record and reads as
//! unrecorded.

use sqlx::{AssertSqlSafe, PgConnection};
use warp_core::LandingVersion;

use crate::error::{Context, Result};
use crate::ident::quote;
use crate::landed::Landed;

/// Records `version` for the table `landed` names (replacing the record of an earlier
/// table of that name, dropped since).
pub async fn record(
    conn: &mut PgConnection,
    metadata: &str,
    landed: &Landed,
    version: LandingVersion,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO {}.landing_tables (schema_name, table_name, landing_version)
         VALUES ($1, $2, $3)
         ON CONFLICT (schema_name, table_name) DO UPDATE SET
            landing_version = EXCLUDED.landing_version, created_at = now()",
        quote(metadata)
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(crate::ddl::unquote(&landed.schema_ident))
        .bind(&landed.table_name)
        .bind(i32::try_from(version.0).unwrap_or(i32::MAX))
        .execute(conn)
        .await
        .context("record the landing version")?;
    Ok(())
}

/// The version recorded for the table `landed` names.
pub async fn read(
    conn: &mut PgConnection,
    metadata: &str,
    landed: &Landed,
) -> Result<LandingVersion> {
    let sql = format!(
        "SELECT landing_version FROM {}.landing_tables WHERE schema_name = $1 AND table_name = $2",
        quote(metadata)
    );
    let version: Option<i32> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(crate::ddl::unquote(&landed.schema_ident))
        .bind(&landed.table_name)
        .fetch_optional(conn)
        .await
        .context("read the landing version")?;
    Ok(version.map_or(LandingVersion::UNRECORDED, |v| {
        LandingVersion(u32::try_from(v).unwrap_or(0))
    }))
}
