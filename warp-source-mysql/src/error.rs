//! The MySQL source's errors and their retry class.

use warp_core::mask_secrets;

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
    /// Something about the source cannot work as configured.
    #[error("{message}")]
    Unsupported {
        message: String,
        hint: Option<String>,
    },
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
];

impl MysqlError {
    pub fn from_driver(context: impl Into<String>, e: mysql_async::Error) -> Self {
        let context = context.into();
        match e {
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
        match self {
            Self::Connection { .. } => true,
            Self::Server { code, .. } => TRANSIENT_CODES.contains(code),
            Self::Unsupported { .. } => false,
        }
    }

    /// The server no longer has the binlog file we must resume from.
    pub fn is_position_lost(&self) -> bool {
        matches!(self, Self::Server { code: 1236, message, .. } if message.contains("binary log") || message.contains("binlog"))
            || matches!(self, Self::Server { code: 1236, .. })
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Server { code: 1045, .. } => Some("check the source credentials (source.connection_string)".into()),
            Self::Server { code: 1227 | 1142 | 1044, .. } => Some(
                "the source user needs SELECT on the schema and REPLICATION SLAVE, REPLICATION CLIENT (and RELOAD on MySQL) globally".into(),
            ),
            Self::Unsupported { hint, .. } => hint.clone(),
            _ => None,
        }
    }
}

impl From<MysqlError> for warp_core::Error {
    fn from(e: MysqlError) -> Self {
        if e.is_transient() {
            warp_core::Error::source_transient(e)
        } else {
            let hint = e.hint();
            warp_core::Error::source_permanent(e, hint)
        }
    }
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
