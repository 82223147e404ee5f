//! Authentication (SPEC §4): a service-account key file (`credentials_path`), the
//! application-default credentials, or — for emulators — an `endpoint` with no
//! credentials at all.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::Client;

use crate::error::{BigQueryError, Context, Result};
use crate::options::BigQueryOptions;

/// Emulators accept any bearer token.
#[derive(Clone)]
struct NoCredentials;

#[async_trait]
impl Authenticator for NoCredentials {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("no-credentials".to_owned())
    }
}

/// `http://host:port` or the full `…/bigquery/v2` base URL.
/// The API is HTTPS with the platform's web PKI; only an emulator `endpoint` may be
/// plain HTTP.
pub fn security(endpoint: Option<&str>) -> warp_core::ConnectionSecurity {
    let url = endpoint.unwrap_or("https://bigquery.googleapis.com");
    match url.strip_prefix("https://") {
        Some(rest) => warp_core::ConnectionSecurity {
            tls_version: Some("HTTPS".into()),
            verification: warp_core::Verification::Full {
                server_name: rest.split(['/', ':']).next().unwrap_or(rest).to_owned(),
            },
        },
        None => warp_core::ConnectionSecurity::plain(),
    }
}

fn v2_base_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if trimmed.ends_with("/bigquery/v2") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/bigquery/v2")
    }
}

/// How long one HTTP request may take beyond the job wait it asks the service for: an
/// answer later than that (a stalled connection, a proxy holding it) is abandoned and
/// the request retried, instead of holding the table forever.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

pub async fn connect(source: &BigQueryOptions, wait: Duration) -> Result<Client> {
    let mut builder = ClientBuilder::new();
    let http = reqwest::Client::builder()
        .timeout(wait + ANSWER_MARGIN)
        .connect_timeout(ANSWER_MARGIN)
        .build()
        .map_err(|e| BigQueryError::Client {
            context: "HTTP client".into(),
            message: e.to_string(),
            transient: false,
        })?;
    builder.with_client(http);
    if let Some(endpoint) = &source.endpoint {
        builder.with_v2_base_url(v2_base_url(endpoint));
    }
    match (&source.credentials_path, &source.endpoint) {
        (Some(path), _) => {
            if !std::path::Path::new(path).is_file() {
                return Err(BigQueryError::Unsupported {
                    message: format!("source.credentials_path: {path} is not a readable file"),
                    hint: Some(
                        "mount the service-account key file (a Secret volume) at this path".into(),
                    ),
                });
            }
            builder
                .build_from_service_account_key_file(path)
                .await
                .context("service-account key")
        }
        (None, Some(_)) => builder
            .build_from_authenticator(Arc::new(NoCredentials))
            .await
            .context("connect"),
        (None, None) => builder
            .build_from_application_default_credentials()
            .await
            .context("application-default credentials"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_key_file_is_a_clear_permanent_error() {
        let yaml = "source: { type: bigquery, project_id: p, database: d, credentials_path: /nonexistent/key.json, change_detection_column: u }\n\
                    destination: { type: postgresql, connection_string: 'postgresql://u@h/d' }\n\
                    schemas: [ { name: d } ]\n";
        let loaded = warp_core::config::load_str(
            yaml,
            "test",
            &warp_core::config::Environment::new(),
            &warp_core::config::ConfigOverrides::default(),
        )
        .unwrap();
        let options = loaded.config.source.connector_or_error().unwrap();
        let Err(e) = connect(&options, Duration::from_secs(1)).await else {
            panic!("connected without a key file")
        };
        let e: warp_core::Error = e.into();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("/nonexistent/key.json"), "{e}");
        assert!(e.hint().unwrap().contains("Secret"));
    }

    #[test]
    fn endpoints_become_v2_base_urls() {
        assert_eq!(
            v2_base_url("http://127.0.0.1:9050"),
            "http://127.0.0.1:9050/bigquery/v2"
        );
        assert_eq!(
            v2_base_url("http://127.0.0.1:9050/bigquery/v2/"),
            "http://127.0.0.1:9050/bigquery/v2"
        );
    }
}
