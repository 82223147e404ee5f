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
            Self::Unsupported { .. } | Self::Tls { .. } => false,
        }
    }

    /// The server no longer has the binlog file we must resume from.
    pub fn is_position_lost(&self) -> bool {
        matches!(self, Self::Server { code: 1236, message, .. } if message.contains("binary log") || message.contains("binlog"))
            || matches!(self, Self::Server { code: 1236, .. })
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Server { code: 1045, .. } => Some(
                "check the source credentials (source.connection_string); MariaDB with require_secure_transport=ON refuses plain-text connections this way too: then set source.ssl_enabled: true and source.ssl_ca".into(),
            ),
            Self::Server { code: 1227 | 1142 | 1044, .. } => Some(
                "the source user needs SELECT on the schema and REPLICATION SLAVE, REPLICATION CLIENT (and RELOAD on MySQL) globally".into(),
            ),
            Self::Unsupported { hint, .. } => hint.clone(),
            Self::Tls { failure, .. } => tls_hint(failure),
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
        if e.is_transient() {
            warp_core::Error::source_transient(e)
        } else {
            let hint = e.hint();
            warp_core::Error::source_permanent(e, hint)
        }
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
