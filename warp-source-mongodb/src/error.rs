//! The MongoDB source's errors and their retry class.

use mongodb::error::ErrorKind;
use warp_core::{mask_secrets, TlsFailure};

#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    /// The server answered a command with an error.
    #[error("{context}: {message} (MongoDB error {code} {code_name})")]
    Server {
        context: String,
        code: i32,
        code_name: String,
        message: String,
    },
    /// Network, selection, pool or protocol trouble, or anything else from the driver.
    #[error("{context}: {message}")]
    Driver {
        context: String,
        message: String,
        transient: bool,
    },
    /// The TLS connection was refused by one of its checks; never retried.
    #[error("{context}: TLS: {failure} ({message})")]
    Tls {
        context: String,
        failure: TlsFailure,
        message: String,
    },
    /// Something about the source cannot work as configured.
    #[error("{message}")]
    Unsupported {
        message: String,
        hint: Option<String>,
    },
}

/// Server codes a retry can fix (elections, shutdowns, interruptions, timeouts).
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    50,    // MaxTimeMSExpired
    43,    // CursorNotFound (a reopened cursor continues from the last token)
    133,   // FailedToSatisfyReadPreference
];

/// The change stream cannot resume from our token.
const POSITION_LOST_CODES: &[i32] = &[
    286, // ChangeStreamHistoryLost
    280, // ChangeStreamFatalError
    260, // InvalidResumeToken
    136, // CappedPositionLost (the oplog rolled over)
];

impl MongoError {
    pub fn from_driver(context: impl Into<String>, e: &mongodb::error::Error) -> Self {
        let context = context.into();
        // Only connection-level errors can carry a TLS refusal.
        let tls = match e.kind.as_ref() {
            ErrorKind::Io(_) | ErrorKind::ServerSelection { .. } => tls_failure(e),
            _ => None,
        };
        if let Some(failure) = tls {
            return Self::Tls {
                context,
                failure,
                message: mask_secrets(&e.to_string()).into_owned(),
            };
        }
        match e.kind.as_ref() {
            ErrorKind::Command(c) => Self::Server {
                context,
                code: c.code,
                code_name: c.code_name.clone(),
                message: c.message.clone(),
            },
            kind => Self::Driver {
                context,
                message: mask_secrets(&e.to_string()).into_owned(),
                transient: matches!(
                    kind,
                    ErrorKind::Io(_)
                        | ErrorKind::ServerSelection { .. }
                        | ErrorKind::ConnectionPoolCleared { .. }
                        | ErrorKind::DnsResolve { .. }
                        | ErrorKind::InvalidResponse { .. }
                ) || e.contains_label("RetryableWriteError")
                    || e.contains_label("ResumableChangeStreamError"),
            },
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Self::Server { code, .. } => TRANSIENT_CODES.contains(code),
            Self::Driver { transient, .. } => *transient,
            Self::Unsupported { .. } | Self::Tls { .. } => false,
        }
    }

    pub fn is_position_lost(&self) -> bool {
        matches!(self, Self::Server { code, .. } if POSITION_LOST_CODES.contains(code))
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Server { code: 18, .. } => {
                Some("check the credentials in source.connection_string and source.auth_source".into())
            }
            Self::Server { code: 13, .. } => Some(
                "the source user needs read on the database and changeStream/find privileges (role `read`)".into(),
            ),
            Self::Server { code: 10334, .. } => Some(
                "a change event passed MongoDB's 16 MB limit (a document near it, looked up whole): MongoDB 6.0.9+ and 7.0+ split such events and cartridge-warp reassembles them; on older servers exclude the collection or keep its documents smaller".into(),
            ),
            Self::Server { code: 40573, .. } => Some(
                "change streams need a replica set or sharded cluster; run mongod as a one-node replica set, or set change_detection_strategy: timestamp".into(),
            ),
            Self::Unsupported { hint, .. } => hint.clone(),
            Self::Tls { failure, .. } => tls_hint(failure),
            _ => None,
        }
    }
}

impl From<MongoError> for warp_core::Error {
    fn from(e: MongoError) -> Self {
        // Transient errors carry no hint: retrying is the action.
        let (retry, hint) = if e.is_transient() {
            (warp_core::Retry::Transient, None)
        } else {
            (warp_core::Retry::Permanent, e.hint())
        };
        warp_core::Error::from_source(e, retry, hint)
    }
}

/// Server selection reports each server's connection error as text only.
fn tls_failure(e: &mongodb::error::Error) -> Option<TlsFailure> {
    TlsFailure::find(e).or_else(|| TlsFailure::from_message(&e.to_string()))
}

/// Which option of the connection string to change, per failed check.
fn tls_hint(failure: &TlsFailure) -> Option<String> {
    let hint = match failure {
        TlsFailure::UnknownCa => "add tlsCAFile=<file of the CA that signed the server's certificate> to source.connection_string",
        TlsFailure::HostnameMismatch => "connect with the host names the certificates name (as the replica set configuration lists them)",
        TlsFailure::Expired => "the server's certificate must be renewed",
        TlsFailure::NotYetValid => "check the clocks of this machine and of the server",
        TlsFailure::NotOffered => "the server does not speak TLS: enable net.tls on it, or set source.ssl_enabled: false (and drop tls=true/ssl=true) if plain text is acceptable",
        TlsFailure::ClientCertificateRejected => "add tlsCertificateKeyFile=<PEM with the client certificate and key> to source.connection_string",
        TlsFailure::BadCertificate(_) | TlsFailure::Handshake(_) => return None,
    };
    Some(hint.to_owned())
}

pub type Result<T, E = MongoError> = std::result::Result<T, E>;

pub trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, mongodb::error::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| MongoError::from_driver(what, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: i32) -> MongoError {
        MongoError::Server {
            context: "watch".into(),
            code,
            code_name: String::new(),
            message: "m".into(),
        }
    }

    #[test]
    fn codes_have_a_retry_class() {
        assert!(server(189).is_transient());
        assert!(!server(18).is_transient());
        assert!(server(286).is_position_lost());
        assert!(!server(286).is_transient());
        assert!(
            !server(10334).is_transient(),
            "a too-large event comes back on retry"
        );
        let e: warp_core::Error = server(10334).into();
        assert!(e.hint().unwrap().contains("6.0.9+"));
        let e: warp_core::Error = server(40573).into();
        assert!(e.hint().unwrap().contains("replica set"));
        // The connector's error stays reachable as the cause, and in the chain.
        assert!(matches!(
            e.cause().and_then(|c| c.downcast_ref::<MongoError>()),
            Some(MongoError::Server { code: 40573, .. })
        ));
        let chained = std::error::Error::source(&e).expect("a source");
        assert!(chained.to_string().contains("MongoDB error 40573"));
    }
}
