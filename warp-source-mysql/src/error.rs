//! The MySQL source's errors and their retry class.

use warp_core::{mask_secrets, TlsFailure};

#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// The server answered with an error.
    #[error("{context}: {message} (MySQL error {code})")]
    Server {
        context: String,
        code: u16,
        message: String,
    },
    /// Network, protocol or pool trouble.
    #[error("{context}: {message}")]
    Connection { context: String, message: String },
    /// The TLS connection was refused by one of its checks; never retried, never
    /// downgraded to plain text.
    #[error("{context}: TLS: {failure}")]
    Tls {
        context: String,
        failure: TlsFailure,
        /// The driver's error; `None` when our own `verify_ca` probe refused.
        #[source]
        source: Option<mysql_async::Error>,
    },
    /// The source is in a state that passes (an XA transaction prepared): retried.
    #[error("{context}: {message}")]
    Busy { context: String, message: String },
    /// Something about the source cannot work as configured.
    #[error("{message}")]
    Unsupported {
        message: String,
        hint: Option<String>,
    },
}

/// The causes of error 1236 ("fatal error reading the binlog"), told apart by the
/// message MySQL and MariaDB send with it, because each needs a different action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpRefusal {
    /// The file or GTIDs we resume from were purged: the table must be re-snapshotted.
    Purged,
    /// Another reader registered our server id (ours before a restart, or a second
    /// deployment with the same `server_id`): retried, with a hint if it persists.
    DuplicateServerId,
    /// The position is not an event start in that file (a failover to a server whose
    /// files differ, a truncated or corrupted binlog).
    BadPosition,
    /// The checkpoint's GTID set holds transactions the server never executed (MySQL,
    /// a failover to a replica that had not received them): rows the source no longer
    /// has may be in the destination.
    AheadOfServer,
    Other,
}

/// Server error codes that a retry can fix.
const TRANSIENT_CODES: &[u16] = &[
    1040, // too many connections
    1205, // lock wait timeout
    1213, // deadlock
    1317, // query interrupted
    2006, // server gone away
    2013, // lost connection
    1053, // server shutdown in progress
    1927, // connection killed (MariaDB)
    4052, // a binlog reader with our server id is still registered (e.g. ours, before a SIGKILL)
    // No such table: dropped at the source, and copied again once a reload's CREATE TABLE
    // brings it back (the binlog reader asks for that copy when it reads the DROP).
    1146,
];

impl MysqlError {
    pub fn from_driver(context: impl Into<String>, e: mysql_async::Error) -> Self {
        let context = context.into();
        let tls = match &e {
            mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
                Some(TlsFailure::NotOffered)
            }
            other => TlsFailure::find(other),
        };
        if let Some(failure) = tls {
            return Self::Tls {
                context,
                failure,
                source: Some(e),
            };
        }
        match e {
            // Said in the message too: a retrying table's status shows the error only.
            mysql_async::Error::Server(s) if s.code == 1146 => Self::Server {
                context,
                code: s.code,
                message: format!(
                    "{} (dropped at the source: copied again once it is created again)",
                    s.message
                ),
            },
            mysql_async::Error::Server(s) => Self::Server {
                context,
                code: s.code,
                message: s.message,
            },
            other => Self::Connection {
                context,
                message: mask_secrets(&other.to_string()).into_owned(),
            },
        }
    }

    pub fn is_transient(&self) -> bool {
        if self.dump_refusal() == Some(DumpRefusal::DuplicateServerId) {
            return true;
        }
        match self {
            Self::Connection { .. } | Self::Busy { .. } => true,
            Self::Server { code, .. } => TRANSIENT_CODES.contains(code),
            Self::Unsupported { .. } | Self::Tls { .. } => false,
        }
    }

    /// Why the server refused a binlog dump (error 1236 covers several causes).
    pub fn dump_refusal(&self) -> Option<DumpRefusal> {
        let Self::Server {
            code: 1236,
            message,
            ..
        } = self
        else {
            return None;
        };
        let m = message.to_ascii_lowercase();
        let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
        Some(if any(&["same server_uuid/server_id", "same server_id"]) {
            DumpRefusal::DuplicateServerId
        } else if any(&[
            "position > file size",
            "impossible position",
            "bogus data",
            "truncated in the middle of event",
            "exceeded max_allowed_packet",
        ]) {
            DumpRefusal::BadPosition
        } else if any(&["has more gtids than the"]) {
            DumpRefusal::AheadOfServer
        } else if any(&[
            "could not find first log file",
            "purged",
            "could not find gtid state",
            "not in the master's binlog",
            "not in the source's binlog",
        ]) {
            DumpRefusal::Purged
        } else {
            DumpRefusal::Other
        })
    }

    /// The server no longer has the binlog we must resume from (purged, or never had it).
    pub fn is_position_lost(&self) -> bool {
        self.dump_refusal() == Some(DumpRefusal::Purged)
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Server { code: 1045, .. } => Some(
                "check the source credentials (source.connection_string); MariaDB with require_secure_transport=ON refuses plain-text connections this way too: then set source.ssl_enabled: true and source.ssl_ca".into(),
            ),
            Self::Server { code: 1227 | 1142 | 1044, .. } => Some(
                "the source user needs SELECT on the schema and REPLICATION SLAVE, REPLICATION CLIENT globally (and LOCK TABLES on the schema on MySQL)".into(),
            ),
            Self::Unsupported { hint, .. } => hint.clone(),
            Self::Tls { failure, .. } => tls_hint(failure),
            Self::Server { code: 1236, .. } => match self.dump_refusal()? {
                DumpRefusal::Purged => Some("the binlog was purged behind this table's checkpoint: cartridge-warp resync --config <file> --schema <schema> --table <table>, and keep binlogs longer (binlog_expire_logs_seconds)".into()),
                DumpRefusal::DuplicateServerId => Some("another binlog reader registered the same server id: give each deployment its own source.server_id (replicas derive theirs from it and POD_NAME)".into()),
                DumpRefusal::BadPosition => Some("the checkpoint's position is not an event start on this server (a failover to a server with other binlog files, or a damaged binlog): enable GTIDs, or resync the table".into()),
                DumpRefusal::AheadOfServer => Some("the server has not executed every transaction of the checkpoint's GTID set (a failover to a replica that had not received them): resync the table (cartridge-warp resync), or fail over to a server that has them".into()),
                DumpRefusal::Other => None,
            },
            Self::Server { code: 1146, .. } => Some(
                "remove the table from the whitelist if it is gone for good".into(),
            ),
            // MySQL 3159 / MariaDB 4151: require_secure_transport refuses plain text.
            Self::Server { code: 3159 | 4151, .. } => Some(
                "the server accepts only TLS connections: set source.ssl_enabled: true and source.ssl_ca: <CA file>".into(),
            ),
            _ => None,
        }
    }
}

impl From<MysqlError> for warp_core::Error {
    fn from(e: MysqlError) -> Self {
        let retry = if e.is_transient() {
            warp_core::Retry::Transient
        } else {
            warp_core::Retry::Permanent
        };
        let hint = e.hint();
        warp_core::Error::from_source(e, retry, hint)
    }
}

/// Which `source.ssl_*` key to change, per failed check.
fn tls_hint(failure: &TlsFailure) -> Option<String> {
    let hint = match failure {
        TlsFailure::UnknownCa => "set source.ssl_ca to the file of the CA that signed the server's certificate",
        TlsFailure::HostnameMismatch => "connect with a host name the server's certificate names, or set source.ssl_mode: verify_ca to check the CA only",
        TlsFailure::Expired => "the server's certificate must be renewed",
        TlsFailure::NotYetValid => "check the clocks of this machine and of the server",
        TlsFailure::NotOffered => "enable TLS on the server (ssl_cert and ssl_key in its configuration), or set source.ssl_mode: preferred / disabled if plain text is acceptable on this network",
        TlsFailure::ClientCertificateRejected => "set source.ssl_cert and source.ssl_key to a client certificate the server accepts",
        TlsFailure::BadCertificate(_) | TlsFailure::Handshake(_) => return None,
    };
    Some(hint.to_owned())
}

pub type Result<T, E = MysqlError> = std::result::Result<T, E>;

pub trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, mysql_async::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| MysqlError::from_driver(what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(message: &str) -> MysqlError {
        MysqlError::Server {
            context: "binlog".into(),
            code: 1236,
            message: message.into(),
        }
    }

    #[test]
    fn error_1236_is_told_apart_by_the_servers_own_messages() {
        let cases = [
            // MySQL and MariaDB, file purged.
            ("Could not find first log file name in binary log index file", DumpRefusal::Purged),
            // MySQL 8.0.23+, GTIDs purged.
            ("Cannot replicate because the source purged required binary logs. Replicate the missing transactions from elsewhere, or provision a new replica from backup.", DumpRefusal::Purged),
            // MariaDB, GTID state too old.
            ("Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged.", DumpRefusal::Purged),
            // MySQL 8.0.26+ and older wording.
            ("A replica with the same server_uuid/server_id as this replica has connected to the source; the first event 'binlog.000001' at 4", DumpRefusal::DuplicateServerId),
            ("A slave with the same server_uuid/server_id as this slave has connected to the master", DumpRefusal::DuplicateServerId),
            ("Client requested source to start replication from position > file size", DumpRefusal::BadPosition),
            ("Client requested master to start replication from impossible position; the first event 'mysql-bin.000001' at 999999", DumpRefusal::BadPosition),
            ("binlog truncated in the middle of event; consider out of disk space on source", DumpRefusal::BadPosition),
            // MySQL 8.0.26+ and older wording, a GTID resume ahead of the server.
            ("Replica has more GTIDs than the source has, using the source's SERVER_UUID. This may indicate that the end of the binary log was truncated or that the last binary log file was lost, e.g., after a power or disk failure when sync_binlog != 1.", DumpRefusal::AheadOfServer),
            ("Slave has more GTIDs than the master has, using the master's SERVER_UUID. This may indicate that the end of the binary log was truncated", DumpRefusal::AheadOfServer),
        ];
        for (message, want) in cases {
            let e = refusal(message);
            assert_eq!(e.dump_refusal(), Some(want), "{message}");
            assert_eq!(e.is_position_lost(), want == DumpRefusal::Purged);
            assert_eq!(e.is_transient(), want == DumpRefusal::DuplicateServerId);
            let core: warp_core::Error = e.into();
            assert!(core.hint().is_some(), "{message}");
        }
        let hints: std::collections::HashSet<String> = [
            "Could not find first log file name in binary log index file",
            "A slave with the same server_uuid/server_id as this slave has connected to the master",
            "Client requested master to start replication from impossible position",
            "Replica has more GTIDs than the source has, using the source's SERVER_UUID",
        ]
        .into_iter()
        .map(|m| refusal(m).hint().unwrap())
        .collect();
        assert_eq!(hints.len(), 4, "each cause has its own hint");
    }
}
