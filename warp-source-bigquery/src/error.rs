//! The BigQuery source's errors and their retry class.

use gcp_bigquery_client::error::BQError;
use warp_core::mask_secrets;

#[derive(Debug, thiserror::Error)]
pub enum BigQueryError {
    /// The API answered with an HTTP error status.
    #[error("{context}: {message} (HTTP {code})")]
    Api {
        context: String,
        code: i64,
        message: String,
    },
    /// A query failed; BigQuery reports this inside a successful HTTP response.
    #[error("{context}: {reason}: {message}")]
    Query {
        context: String,
        reason: String,
        message: String,
    },
    /// Network trouble, or the client could not authenticate or decode.
    #[error("{context}: {message}")]
    Client {
        context: String,
        message: String,
        transient: bool,
    },
    /// Something about the source cannot work as configured.
    #[error("{message}")]
    Unsupported {
        message: String,
        hint: Option<String>,
    },
}

/// Query error reasons a retry can fix.
const TRANSIENT_REASONS: &[&str] = &[
    "backendError",
    "internalError",
    "rateLimitExceeded",
    "jobBackendError",
    "jobInternalError",
    "quotaExceeded",
];

impl BigQueryError {
    pub fn from_client(context: impl Into<String>, e: BQError) -> Self {
        let context = context.into();
        match e {
            BQError::ResponseError { error } => Self::Api {
                context,
                code: error.error.code,
                message: error.error.message,
            },
            BQError::RequestError(r) => Self::Client {
                context,
                message: mask_secrets(&r.to_string()).into_owned(),
                transient: true,
            },
            other => Self::Client {
                context,
                message: mask_secrets(&other.to_string()).into_owned(),
                transient: false,
            },
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { code, .. } => matches!(code, 408 | 429 | 500 | 502 | 503 | 504),
            Self::Query { reason, .. } => TRANSIENT_REASONS.contains(&reason.as_str()),
            Self::Client { transient, .. } => *transient,
            Self::Unsupported { .. } => false,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Api { code: 401, .. } => Some(
                "check source.credentials_path (a service-account key file) or the application-default credentials".into(),
            ),
            Self::Api { code: 403, .. } => Some(
                "the account needs roles/bigquery.dataViewer on the dataset and roles/bigquery.jobUser on the project".into(),
            ),
            Self::Api { code: 404, .. } => {
                Some("check source.project_id and source.database (the dataset)".into())
            }
            Self::Unsupported { hint, .. } => hint.clone(),
            _ => None,
        }
    }
}

impl From<BigQueryError> for warp_core::Error {
    fn from(e: BigQueryError) -> Self {
        // Transient errors carry no hint: retrying is the action.
        let (retry, hint) = if e.is_transient() {
            (warp_core::Retry::Transient, None)
        } else {
            (warp_core::Retry::Permanent, e.hint())
        };
        warp_core::Error::from_source(e, retry, hint)
    }
}

pub type Result<T, E = BigQueryError> = std::result::Result<T, E>;

pub trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, BQError> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| BigQueryError::from_client(what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classes() {
        let q = |reason: &str| BigQueryError::Query {
            context: "poll".into(),
            reason: reason.into(),
            message: "m".into(),
        };
        assert!(q("rateLimitExceeded").is_transient());
        assert!(!q("invalidQuery").is_transient());
        let api = |code| BigQueryError::Api {
            context: "list".into(),
            code,
            message: "m".into(),
        };
        assert!(api(503).is_transient());
        assert!(!api(403).is_transient());
        let e: warp_core::Error = api(403).into();
        assert!(e.hint().unwrap().contains("dataViewer"));
    }
}
