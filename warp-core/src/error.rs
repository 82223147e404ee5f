//! The one error type of `warp-core`, and the retry classification every connector maps into.

use std::fmt;
use std::sync::Arc;

use crate::config::ConfigErrors;

/// Whether retrying the same operation can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Connection reset, timeout, deadlock, failover: retry with backoff.
    Transient,
    /// Bad credentials, missing privileges, unsupported type, lost position: retrying
    /// the same thing fails the same way, so the table stops with a hint.
    Permanent,
}

/// Errors of the engine and of connectors (connectors wrap their driver errors into
/// [`Error::Source`] / [`Error::Sink`] with the right [`Retry`] class).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] ConfigErrors),

    #[error("source: {message}")]
    Source {
        message: String,
        retry: Retry,
        hint: Option<String>,
        /// The connector's own error, when it came from one (its chain continues there).
        #[source]
        cause: Option<Cause>,
    },

    #[error("destination: {message}")]
    Sink {
        message: String,
        retry: Retry,
        hint: Option<String>,
        #[source]
        cause: Option<Cause>,
    },

    /// The source no longer has the position we must resume from (binlog purged,
    /// change-stream history lost). Never skipped silently.
    #[error("{table}: source position {position} is no longer available at the source: {detail}")]
    PositionLost {
        table: String,
        position: String,
        detail: String,
    },

    /// The source replaced the table's contents wholesale without row events (MongoDB's
    /// `renameCollection` onto it with `dropTarget`, `$out`, `mapReduce`): the engine
    /// copies the table again at once.
    #[error("{table}: {how} at the source, with no row events: copying it again")]
    Replaced { table: String, how: String },

    /// Another owner took this table (fencing token moved on): this writer must stop.
    #[error("{table}: fenced off: checkpoint token is {current}, ours is {ours}")]
    Fenced {
        table: String,
        ours: u64,
        current: u64,
    },

    /// Another live replica holds this table's lease: this one must not run it.
    #[error("{table}: another replica holds the lease")]
    NotOwner { table: String },

    /// A table cannot be replicated as discovered (no primary key, unsupported type...).
    #[error("{table}: {message}")]
    Table {
        table: String,
        message: String,
        hint: Option<String>,
    },

    /// A position or checkpoint could not be encoded or decoded.
    #[error("position encoding: {0}")]
    Position(String),

    #[error("shut down before the operation finished")]
    Cancelled,
}

/// A connector's error kept inside [`Error`] (shared, so `Error` stays `Clone`).
/// Connectors turn driver errors into their own with masked text at their boundary
/// (driver messages can carry a connection string), so the chain holds no secret.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    pub fn source_transient(message: impl fmt::Display) -> Self {
        Self::Source {
            message: message.to_string(),
            retry: Retry::Transient,
            hint: None,
            cause: None,
        }
    }

    pub fn source_permanent(message: impl fmt::Display, hint: impl Into<Option<String>>) -> Self {
        Self::Source {
            message: message.to_string(),
            retry: Retry::Permanent,
            hint: hint.into(),
            cause: None,
        }
    }

    pub fn sink_transient(message: impl fmt::Display) -> Self {
        Self::Sink {
            message: message.to_string(),
            retry: Retry::Transient,
            hint: None,
            cause: None,
        }
    }

    pub fn sink_permanent(message: impl fmt::Display, hint: impl Into<Option<String>>) -> Self {
        Self::Sink {
            message: message.to_string(),
            retry: Retry::Permanent,
            hint: hint.into(),
            cause: None,
        }
    }

    /// A source connector's error as the engine sees it: its text, its class and hint,
    /// and the error itself as the cause (its driver error further down the chain).
    pub fn from_source<E>(e: E, retry: Retry, hint: Option<String>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self::Source {
            message: e.to_string(),
            retry,
            hint,
            cause: Some(Arc::new(e)),
        }
    }

    /// The connector error this one wraps, for downcasting (`source()` yields it too,
    /// behind its `Arc`).
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Self::Source { cause, .. } | Self::Sink { cause, .. } => cause.as_deref(),
            _ => None,
        }
    }

    /// As [`Error::from_source`], for the destination.
    pub fn from_sink<E>(e: E, retry: Retry, hint: Option<String>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self::Sink {
            message: e.to_string(),
            retry,
            hint,
            cause: Some(Arc::new(e)),
        }
    }

    /// The single place that decides retryability for the engine.
    pub fn retry(&self) -> Retry {
        match self {
            Self::Source { retry, .. } | Self::Sink { retry, .. } => *retry,
            Self::Config(_)
            | Self::PositionLost { .. }
            | Self::Replaced { .. }
            | Self::Fenced { .. }
            | Self::NotOwner { .. }
            | Self::Table { .. }
            | Self::Position(_)
            | Self::Cancelled => Retry::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.retry() == Retry::Transient
    }

    /// What an operator should do about it, when we know.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Source { hint, .. } | Self::Sink { hint, .. } | Self::Table { hint, .. } => {
                hint.clone()
            }
            Self::PositionLost { table, .. } => Some(format!(
                "re-snapshot the table: cartridge-warp resync --config <file> --schema <schema> --table {}",
                // `table` is `database.table`; resync takes the table's name.
                table.split_once('.').map_or(table.as_str(), |(_, t)| t)
            )),
            Self::Fenced { .. } | Self::NotOwner { .. } => {
                Some("another replica owns this table now; this one stops writing it".into())
            }
            Self::Config(_) => Some("fix the configuration and restart".into()),
            Self::Replaced { .. } | Self::Position(_) | Self::Cancelled => None,
        }
    }

    /// A short, stable label for the `error_type` metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Source { .. } => "source",
            Self::Sink { .. } => "destination",
            Self::PositionLost { .. } => "position_lost",
            Self::Replaced { .. } => "replaced",
            Self::Fenced { .. } | Self::NotOwner { .. } => "fenced",
            Self::Table { .. } => "table",
            Self::Position(_) => "position",
            Self::Cancelled => "cancelled",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_position_hints_resync_of_the_table_by_name() {
        let e = Error::PositionLost {
            table: "shop.order.items".into(),
            position: "p".into(),
            detail: "d".into(),
        };
        assert!(!e.is_transient());
        assert!(e.hint().unwrap().ends_with("--table order.items"));
    }
}
