//! The BigQuery source's errors and their retry class.

use gcp_bigquery_client::error::BQError;
use warp_core::mask_secrets;

#[derive(Debug, thiserror::Error)]
pub enum BigQueryError {
    /// The API answered with an HTTP error status; `reason` is the first of its
    /// `errors[].reason` (BigQuery tells causes apart by reason, not by status: a 403 is
    /// `accessDenied` or `rateLimitExceeded`).
    #[error("{context}: {message} (HTTP {code}{})", reason.as_deref().map(|r| format!(", {r}")).unwrap_or_default())]
    Api {
        context: String,
        code: i64,
        reason: Option<String>,
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

impl BigQueryError {
    /// BigQuery's reason for the failure, where it gave one (`invalidQuery`, …).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Api { reason, .. } => reason.as_deref(),
            Self::Query { reason, .. } => Some(reason),
            Self::Client { .. } | Self::Unsupported { .. } => None,
        }
    }
}

/// Error reasons a retry can fix (BigQuery's error-messages table): rate and quota
/// limits clear with backoff, backend errors are the service's own.
const TRANSIENT_REASONS: &[&str] = &[
    "backendError",
    "internalError",
    "rateLimitExceeded",
    "jobBackendError",
    "jobInternalError",
    "quotaExceeded",
    "jobRateLimitExceeded",
    "tableUnavailable",
    "timeout",
];

/// Error reasons no retry fixes, whatever the status they come with.
const PERMANENT_REASONS: &[&str] = &[
    "accessDenied",
    "billingNotEnabled",
    "billingTierLimitExceeded",
    "invalid",
    "invalidQuery",
    "notFound",
    "bytesBilledLimitExceeded",
    "responseTooLarge",
    "resourcesExceeded",
];

/// Whether `reason` is one of BigQuery's error reasons (either table above).
pub fn is_error_reason(reason: &str) -> bool {
    TRANSIENT_REASONS.contains(&reason) || PERMANENT_REASONS.contains(&reason)
}

impl BigQueryError {
    pub fn from_client(context: impl Into<String>, e: BQError) -> Self {
        let context = context.into();
        match e {
            BQError::ResponseError { error } => Self::Api {
                context,
                code: error.error.code,
                reason: error
                    .error
                    .errors
                    .iter()
                    .find_map(|e| e.get("reason").cloned()),
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
            // A reason decides; an unknown one falls back to the status.
            Self::Api { code, reason, .. } => match reason.as_deref() {
                Some(r) if TRANSIENT_REASONS.contains(&r) => true,
                Some(r) if PERMANENT_REASONS.contains(&r) => false,
                _ => matches!(code, 408 | 429 | 500 | 502 | 503 | 504),
            },
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
            Self::Api { reason: Some(r), .. } | Self::Query { reason: r, .. }
                if r == "notFound" =>
            {
                Some("check source.project_id and source.database (the dataset), and that the dataset's location is the one its jobs run in".into())
            }
            Self::Api { reason: Some(r), .. } | Self::Query { reason: r, .. }
                if r == "bytesBilledLimitExceeded" =>
            {
                Some("the query would bill more than source.maximum_bytes_billed (BigQuery's estimate is in the message): raise it, or partition or cluster the table on its change_detection_column so polls scan less".into())
            }
            Self::Api { reason: Some(r), .. } | Self::Query { reason: r, .. }
                if r == "resourcesExceeded" =>
            {
                Some("the query needed more memory than BigQuery gives one query; retrying will not help (docs/bigquery.md, \"Limits of the full load\")".into())
            }
            Self::Api { reason: Some(r), .. } | Self::Query { reason: r, .. }
                if r == "responseTooLarge" =>
            {
                Some("the result is larger than one query may return (10 GB compressed): a table whose key has several columns is copied by one query; give it a one-column key (primary_key) and cluster the table on it (docs/bigquery.md, \"Limits of the full load\")".into())
            }
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
    fn resources_exceeded_is_permanent_and_says_why() {
        let e = BigQueryError::Query {
            context: "plan".into(),
            reason: "resourcesExceeded".into(),
            message: "Resources exceeded during query execution".into(),
        };
        assert!(!e.is_transient());
        assert!(e.hint().unwrap().contains("memory"), "{:?}", e.hint());
        let e = BigQueryError::Query {
            context: "chunk".into(),
            reason: "responseTooLarge".into(),
            message: "Response too large to return".into(),
        };
        assert!(!e.is_transient());
        assert!(e.hint().unwrap().contains("cluster"), "{:?}", e.hint());
    }

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
            reason: None,
            message: "m".into(),
        };
        assert!(api(503).is_transient());
        assert!(!api(403).is_transient());
        let e: warp_core::Error = api(403).into();
        assert!(e.hint().unwrap().contains("dataViewer"));
    }

    /// Error documents as BigQuery sends them (status, then `error.errors[].reason`).
    fn answered(status: i64, reason: &str, message: &str) -> BigQueryError {
        let body = format!(
            r#"{{"error": {{"code": {status}, "message": "{message}", "errors": [{{"message": "{message}", "domain": "global", "reason": "{reason}"}}], "status": "PERMISSION_DENIED"}}}}"#
        );
        let error = serde_json::from_str(&body).unwrap();
        BigQueryError::from_client("query", BQError::ResponseError { error })
    }

    #[test]
    fn api_errors_are_classed_by_reason_not_status() {
        let rate = answered(
            403,
            "rateLimitExceeded",
            "Exceeded rate limits: too many table update operations for this table.",
        );
        assert!(rate.is_transient(), "{rate}");
        assert!(rate.to_string().contains("rateLimitExceeded"));
        assert!(answered(
            403,
            "quotaExceeded",
            "Quota exceeded: Your project exceeded quota for concurrent queries."
        )
        .is_transient());
        assert!(answered(500, "backendError", "Backend error. Job aborted.").is_transient());
        let denied = answered(
            403,
            "accessDenied",
            "Access Denied: Dataset p:d: Permission bigquery.tables.getData denied",
        );
        assert!(!denied.is_transient());
        let e: warp_core::Error = denied.into();
        assert!(e.hint().unwrap().contains("dataViewer"), "{e:?}");
        let missing = answered(404, "notFound", "Not found: Job p:EU.job_123");
        assert!(!missing.is_transient());
        let e: warp_core::Error = missing.into();
        assert!(e.hint().unwrap().contains("location"), "{e:?}");
        let limit = answered(
            400,
            "bytesBilledLimitExceeded",
            "Query exceeded limit for bytes billed: 1000000. 10485760 or higher required.",
        );
        assert!(!limit.is_transient());
        let e: warp_core::Error = limit.into();
        assert!(e.hint().unwrap().contains("maximum_bytes_billed"), "{e:?}");
        // An unknown reason falls back to the status.
        assert!(answered(503, "somethingNew", "m").is_transient());
        assert!(!answered(400, "invalidQuery", "Syntax error").is_transient());
    }
}
