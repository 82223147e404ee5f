//! What the server still holds of its binlog, seen from the oldest position a deployment
//! needs (docs/operations.md, "Log retention"): the files `SHOW BINARY LOGS` lists and the
//! server's expiry setting. A position is held while its file is listed or, for MySQL GTID
//! positions (which survive a failover to a server with other file names), while every
//! purged transaction is among those the position includes.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use warp_core::LogRetention;

use crate::error::{Context, Result};
use crate::gtid_set::GtidSet;
use crate::position::BinlogPosition;

/// One binlog file as `SHOW BINARY LOGS` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BinlogFile {
    pub name: String,
    pub size: u64,
}

/// The retention of the server `conn` is connected to, seen from `needed`.
pub async fn read(conn: &mut Conn, needed: &BinlogPosition) -> Result<LogRetention> {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .context("list binlog files")?;
    let files: Vec<BinlogFile> = rows
        .into_iter()
        .filter_map(|r| {
            Some(BinlogFile {
                name: r.get_opt::<String, _>(0)?.ok()?,
                size: r.get_opt::<u64, _>(1)?.ok()?,
            })
        })
        .collect();
    let purged = match &needed.gtid_set {
        Some(_) => conn
            .query_first::<String, _>("SELECT @@GLOBAL.gtid_purged")
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let expiry = expiry_seconds(conn).await?;
    Ok(assess(needed, &files, purged.as_deref(), expiry))
}

/// `binlog_expire_logs_seconds` (MySQL 8, MariaDB 10.6+), else `expire_logs_days`; `None`
/// when neither purges anything (0).
async fn expiry_seconds(conn: &mut Conn) -> Result<Option<f64>> {
    let seconds: Option<f64> = match conn
        .query_first::<f64, _>("SELECT @@GLOBAL.binlog_expire_logs_seconds")
        .await
    {
        Ok(s) => s,
        Err(_) => conn
            .query_first::<f64, _>("SELECT @@GLOBAL.expire_logs_days * 86400")
            .await
            .context("read expire_logs_days")?,
    };
    Ok(seconds.filter(|&s| s > 0.0))
}

/// The retention of `files` (oldest first) from `needed`. `purged`: the server's
/// `gtid_purged`, for positions with a GTID set.
pub fn assess(
    needed: &BinlogPosition,
    files: &[BinlogFile],
    purged: Option<&str>,
    retention_seconds: Option<f64>,
) -> LogRetention {
    let at = files.iter().position(|f| f.name == needed.file);
    let held_by_gtid = match (&needed.gtid_set, purged) {
        (Some(have), Some(purged)) => match (GtidSet::parse(purged), GtidSet::parse(have)) {
            (Ok(purged), Ok(have)) => Some(purged.is_subset(&have)),
            _ => None,
        },
        _ => None,
    };
    let held = held_by_gtid.unwrap_or(at.is_some());
    let backlog_bytes = at.map(|i| {
        let rest: u64 = files[i + 1..].iter().map(|f| f.size).sum();
        files[i].size.saturating_sub(needed.pos) + rest
    });
    LogRetention {
        held,
        needed: format!("binlog file {} at {}", needed.file, needed.pos),
        oldest_retained: files.first().map_or_else(
            || "no binlog files".to_owned(),
            |f| format!("binlog file {}", f.name),
        ),
        retention_seconds,
        older_seconds: None,
        backlog_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<BinlogFile> {
        [
            ("mysql-bin.000007", 1_000),
            ("mysql-bin.000008", 500),
            ("mysql-bin.000009", 200),
        ]
        .map(|(name, size)| BinlogFile {
            name: name.into(),
            size,
        })
        .to_vec()
    }

    #[test]
    fn a_position_is_held_while_its_file_is_listed() {
        let r = assess(
            &BinlogPosition::new("mysql-bin.000008", 100),
            &files(),
            None,
            None,
        );
        assert!(r.held);
        assert_eq!(r.needed, "binlog file mysql-bin.000008 at 100");
        assert_eq!(r.backlog_bytes, Some(400 + 200));
        assert_eq!(r.oldest_retained, "binlog file mysql-bin.000007");
        let gone = assess(
            &BinlogPosition::new("mysql-bin.000006", 4),
            &files(),
            None,
            Some(3600.0),
        );
        assert!(!gone.held);
        assert_eq!(gone.backlog_bytes, None);
        assert_eq!(gone.retention_seconds, Some(3600.0));
    }

    /// After a failover the new primary names its files otherwise: a GTID position is held
    /// while the server purged nothing the position lacks.
    #[test]
    fn a_gtid_position_is_held_by_the_transactions_it_includes() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut needed = BinlogPosition::new("other-host-bin.000002", 4);
        needed.gtid_set = Some(format!("{uuid}:1-100"));
        assert!(assess(&needed, &files(), Some(&format!("{uuid}:1-50")), None).held);
        assert!(!assess(&needed, &files(), Some(&format!("{uuid}:1-150")), None).held);
        assert!(assess(&needed, &files(), Some(""), None).held);
    }
}
