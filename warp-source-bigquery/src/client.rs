//! Authentication (SPEC §4): a credentials file (`credentials_path`, or the
//! application-default `GOOGLE_APPLICATION_CREDENTIALS`) of one of the kinds Google's
//! tools write — a service-account key, a workload identity federation configuration
//! (`external_account`) or gcloud user credentials — else the application-default
//! credentials (the metadata server), or — for emulators — an `endpoint` with no
//! credentials at all.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::Client;
use serde::Deserialize;
use yup_oauth2::{DefaultHyperClientBuilder, HyperClientBuilder};

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

/// The scope every token is asked for.
const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

/// A credentials file's kind, from its `type` field.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Credentials {
    ServiceAccount,
    /// Workload identity federation: a subject token from a file or a URL (a Kubernetes
    /// projected service-account token, an OIDC or SAML provider) exchanged at Google's
    /// STS, then, with `service_account_impersonation_url`, for a service account's token.
    ExternalAccount,
    AuthorizedUser,
    #[serde(other)]
    Other,
}

/// Tokens from a workload identity federation flow (yup-oauth2 runs the exchange and
/// caches the token until it expires).
#[derive(Clone)]
struct Federated(
    yup_oauth2::authenticator::Authenticator<
        <DefaultHyperClientBuilder as HyperClientBuilder>::Connector,
    >,
);

#[async_trait]
impl Authenticator for Federated {
    async fn access_token(&self) -> Result<String, BQError> {
        let token = self.0.token(&[SCOPE]).await?;
        token.token().map(str::to_owned).ok_or(BQError::NoToken)
    }
}

fn unusable(key: &str, path: &str, why: String) -> BigQueryError {
    BigQueryError::Unsupported {
        message: format!("{key}: {path}: {why}"),
        hint: Some(
            "a service-account key, an external_account (workload identity federation) configuration from `gcloud iam workload-identity-pools create-cred-config`, or gcloud user credentials".into(),
        ),
    }
}

/// A client authenticated by the credentials file at `path` (`key` names where the
/// path came from, for errors).
async fn from_file(builder: &mut ClientBuilder, key: &str, path: &str) -> Result<Client> {
    let text = std::fs::read_to_string(path).map_err(|e| BigQueryError::Unsupported {
        message: format!("{key}: {path} is not a readable file ({e})"),
        hint: Some("mount the credentials file (a Secret volume) at this path".into()),
    })?;
    let kind: Credentials = serde_json::from_str(&text)
        .map_err(|e| unusable(key, path, format!("not a credentials file ({e})")))?;
    match kind {
        Credentials::ServiceAccount => builder
            .build_from_service_account_key_file(path)
            .await
            .context("service-account key"),
        Credentials::ExternalAccount => {
            let secret = serde_json::from_str(&text)
                .map_err(|e| unusable(key, path, format!("external_account: {e}")))?;
            let auth = yup_oauth2::ExternalAccountAuthenticator::builder(secret)
                .build()
                .await
                .map_err(|e| unusable(key, path, format!("external_account: {e}")))?;
            builder
                .build_from_authenticator(Arc::new(Federated(auth)))
                .await
                .context("workload identity federation")
        }
        Credentials::AuthorizedUser => builder
            .build_from_authorized_user_authenticator(path)
            .await
            .context("gcloud user credentials"),
        Credentials::Other => Err(unusable(
            key,
            path,
            "credentials of an unsupported `type`".into(),
        )),
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
    let adc = std::env::var("GOOGLE_APPLICATION_CREDENTIALS")
        .ok()
        .filter(|p| !p.is_empty());
    match (&source.credentials_path, &source.endpoint, adc) {
        (Some(path), _, _) => from_file(&mut builder, "source.credentials_path", path).await,
        (None, Some(_), _) => builder
            .build_from_authenticator(Arc::new(NoCredentials))
            .await
            .context("connect"),
        // The client library reads only service-account keys from this variable.
        (None, None, Some(path)) => {
            from_file(&mut builder, "GOOGLE_APPLICATION_CREDENTIALS", &path).await
        }
        (None, None, None) => builder
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

    #[tokio::test]
    async fn credentials_are_told_apart_by_type_and_unknown_ones_refused_clearly() {
        let dir = std::env::temp_dir().join(format!("warp-bq-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, json: &str| {
            let p = dir.join(name);
            std::fs::write(&p, json).unwrap();
            p.to_str().unwrap().to_owned()
        };
        // An AWS-sourced configuration: the flow supports file and URL sources only.
        let aws = file(
            "aws.json",
            r#"{"type": "external_account", "audience": "//iam.googleapis.com/x", "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request", "token_url": "https://sts.googleapis.com/v1/token", "credential_source": {"environment_id": "aws1", "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone"}}"#,
        );
        let other = file("other.json", r#"{"type": "impersonated_service_account"}"#);
        let junk = file("junk.json", "not json");
        for (path, says) in [
            (aws, "external_account"),
            (other, "unsupported `type`"),
            (junk, "not a credentials file"),
        ] {
            let Err(e) =
                from_file(&mut ClientBuilder::new(), "source.credentials_path", &path).await
            else {
                panic!("{path} accepted")
            };
            let e: warp_core::Error = e.into();
            assert!(!e.is_transient(), "{e}");
            assert!(
                e.to_string().contains(says) && e.to_string().contains(&path),
                "{e}"
            );
            assert!(e.hint().unwrap().contains("workload identity federation"));
        }
        assert_eq!(
            serde_json::from_str::<Credentials>(
                r#"{"type": "service_account", "private_key": "k"}"#
            )
            .unwrap(),
            Credentials::ServiceAccount
        );
        std::fs::remove_dir_all(dir).unwrap();
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
