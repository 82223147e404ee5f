//! The sink's errors and the one place that decides which are retryable.

use warp_core::{mask_secrets, TlsFailure};

/// Errors of the PostgreSQL sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A statement failed at the server (SQLSTATE in `code`).
    #[error("{context}: {message} (SQLSTATE {code})")]
    Database {
        context: String,
        code: String,
        message: String,
    },
    /// Connecting or talking to the server failed (network, pool timeout, TLS).
    #[error("{context}: {message}")]
    Connection { context: String, message: String },
    /// The TLS connection was refused by one of its checks; never retried, never
    /// downgraded to plain text.
    #[error("{context}: TLS: {failure}")]
    Tls {
        context: String,
        failure: TlsFailure,
        #[source]
        source: sqlx::Error,
    },
    /// The configuration cannot work (bad URL, clashing names, missing key).
    #[error("{0}")]
    Invalid(String),
    /// Another replica took the table's lease: this transaction must not commit.
    #[error("{table}: fenced off: lease token is {current}, ours is {ours}")]
    Fenced {
        table: String,
        ours: u64,
        current: u64,
    },
    /// A chunk copied for its owner lost its claim (it lapsed and was claimed again, or
    /// the chunk was copied or re-planned meanwhile): its rows must not commit.
    #[error("{table}: chunk {index} is no longer claimed by this copy")]
    ClaimLost { table: String, index: usize },
}

impl SinkError {
    pub fn from_sqlx(context: impl Into<String>, e: sqlx::Error) -> Self {
        let context = context.into();
        if let Some(failure) = tls_failure(&e) {
            return Self::Tls {
                context,
                failure,
                source: e,
            };
        }
        match &e {
            sqlx::Error::Database(db) => Self::Database {
                context,
                code: db.code().map(|c| c.into_owned()).unwrap_or_default(),
                message: db.message().to_owned(),
            },
            _ => Self::Connection {
                context,
                message: mask_secrets(&e.to_string()).into_owned(),
            },
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Database { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Connection problems, serialization failures, deadlocks, shutdowns and resource
    /// shortages pass; everything else (syntax, privileges, data errors) does not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connection { .. } => true,
            Self::Database { code, .. } => {
                matches!(code.get(..2), Some("08" | "53" | "57" | "58"))
                    || matches!(code.as_str(), "40001" | "40P01" | "55P03")
            }
            Self::Invalid(_) | Self::Fenced { .. } | Self::ClaimLost { .. } | Self::Tls { .. } => {
                false
            }
        }
    }

    /// A data problem confined to some rows (conversion, constraint): those rows go to
    /// the dead-letter table and the rest of the batch commits.
    pub fn is_row_level(&self) -> bool {
        matches!(self.code().and_then(|c| c.get(..2)), Some("22" | "23"))
    }

    fn hint(&self) -> Option<String> {
        if let Self::Tls { failure, .. } = self {
            return tls_hint(failure);
        }
        if let Self::Database { code, message, .. } = self {
            // pg_hba.conf has `hostssl` lines only: the server wants TLS.
            if code == "28000" && message.contains("no encryption") {
                return Some(
                    "the server accepts only TLS connections: set sslmode=verify-full (with sslrootcert) or sslmode=require in destination.connection_string".into(),
                );
            }
        }
        match self.code()? {
            "28P01" | "28000" => Some("check the destination credentials (destination.connection_string)".into()),
            "42501" => Some(
                "the destination user needs CREATE on the database and USAGE/CREATE on the target schemas".into(),
            ),
            "3D000" => Some("the destination database does not exist; create it first".into()),
            _ => None,
        }
    }
}

impl From<SinkError> for warp_core::Error {
    fn from(e: SinkError) -> Self {
        if let SinkError::Fenced {
            table,
            ours,
            current,
        } = e
        {
            return warp_core::Error::Fenced {
                table,
                ours,
                current,
            };
        }
        let (retry, hint) = if e.is_transient() {
            (warp_core::Retry::Transient, None)
        } else {
            (warp_core::Retry::Permanent, e.hint())
        };
        warp_core::Error::from_sink(e, retry, hint)
    }
}

/// sqlx reports a server that answers `N` to the TLS request with a message only.
fn tls_failure(e: &sqlx::Error) -> Option<TlsFailure> {
    if let Some(found) = TlsFailure::find(e) {
        return Some(found);
    }
    match e {
        sqlx::Error::Tls(inner) if inner.to_string().contains("does not support TLS") => {
            Some(TlsFailure::NotOffered)
        }
        sqlx::Error::Tls(inner) => Some(TlsFailure::Handshake(inner.to_string())),
        _ => None,
    }
}

/// Which key of `destination.connection_string` to change, per failed check.
fn tls_hint(failure: &TlsFailure) -> Option<String> {
    let hint = match failure {
        TlsFailure::UnknownCa => "set sslrootcert=<file of the CA that signed the server's certificate> in destination.connection_string (sslrootcert=system for a publicly trusted server)",
        TlsFailure::HostnameMismatch => "connect with a host name the server's certificate names, or use sslmode=verify-ca to check the CA only",
        TlsFailure::Expired => "the server's certificate must be renewed",
        TlsFailure::NotYetValid => "check the clocks of this machine and of the server",
        TlsFailure::NotOffered => "enable ssl on the PostgreSQL server, or set sslmode=prefer / disable if plain text is acceptable on this network",
        TlsFailure::ClientCertificateRejected => "set sslcert=<client certificate> and sslkey=<its key> in destination.connection_string",
        TlsFailure::BadCertificate(_) | TlsFailure::Handshake(_) => return None,
    };
    Some(hint.to_owned())
}

pub type Result<T, E = SinkError> = std::result::Result<T, E>;

/// `.context("what")` for sqlx results.
pub trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, sqlx::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| SinkError::from_sqlx(what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(code: &str) -> SinkError {
        SinkError::Database {
            context: "x".into(),
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn classification() {
        assert!(db("40P01").is_transient(), "deadlock");
        assert!(db("08006").is_transient(), "connection failure");
        assert!(db("57P01").is_transient(), "admin shutdown");
        assert!(!db("42601").is_transient(), "syntax");
        assert!(!db("28P01").is_transient(), "bad password");
        assert!(db("23505").is_row_level() && db("22001").is_row_level());
        assert!(!db("42501").is_row_level());
        let core: warp_core::Error = db("28P01").into();
        assert!(core.hint().unwrap().contains("credentials"));
    }
}
