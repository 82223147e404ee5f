//! Authentication (docs/configuration.md): a credentials file (`credentials_path`, or the
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

impl Credentials {
    /// The `type` as the file spells it.
    fn name(&self) -> &'static str {
        match self {
            Self::ServiceAccount => "service_account",
            Self::ExternalAccount => "external_account",
            Self::AuthorizedUser => "authorized_user",
            Self::Other => "other",
        }
    }
}

type Connector = <DefaultHyperClientBuilder as HyperClientBuilder>::Connector;

/// Tokens from one of yup-oauth2's flows (service account, workload identity
/// federation, user, metadata server); it caches each token until it expires. Callers
/// take turns: the library does not merge concurrent fetches, so the tables starting
/// together would each run the whole exchange (seen in CI: two STS exchanges at start).
#[derive(Clone)]
struct Tokens {
    auth: yup_oauth2::authenticator::Authenticator<Connector>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Tokens {
    fn shared(auth: yup_oauth2::authenticator::Authenticator<Connector>) -> Arc<dyn Authenticator> {
        Arc::new(Self {
            auth,
            turn: Arc::default(),
        })
    }
}

#[async_trait]
impl Authenticator for Tokens {
    async fn access_token(&self) -> Result<String, BQError> {
        let _turn = self.turn.lock().await;
        let token = self.auth.token(&[SCOPE]).await?;
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

/// Tokens from the credentials file at `path` (`key` names where the path came from,
/// for errors).
async fn from_file(key: &str, path: &str) -> Result<Arc<dyn Authenticator>> {
    let text = std::fs::read_to_string(path).map_err(|e| BigQueryError::Unsupported {
        message: format!("{key}: {path} is not a readable file ({e})"),
        hint: Some("mount the credentials file (a Secret volume) at this path".into()),
    })?;
    let kind: Credentials = serde_json::from_str(&text)
        .map_err(|e| unusable(key, path, format!("not a credentials file ({e})")))?;
    let bad = |e: &dyn std::fmt::Display| unusable(key, path, format!("{}: {e}", kind.name()));
    let auth = match kind {
        Credentials::ServiceAccount => {
            let secret = serde_json::from_str(&text).map_err(|e| bad(&e))?;
            yup_oauth2::ServiceAccountAuthenticator::builder(secret)
                .build()
                .await
        }
        Credentials::ExternalAccount => {
            let secret = serde_json::from_str(&text).map_err(|e| bad(&e))?;
            yup_oauth2::ExternalAccountAuthenticator::builder(secret)
                .build()
                .await
        }
        Credentials::AuthorizedUser => {
            let secret = serde_json::from_str(&text).map_err(|e| bad(&e))?;
            yup_oauth2::AuthorizedUserAuthenticator::builder(secret)
                .build()
                .await
        }
        Credentials::Other => {
            return Err(unusable(
                key,
                path,
                "credentials of an unsupported `type`".into(),
            ))
        }
    };
    Ok(Tokens::shared(auth.map_err(|e| bad(&e))?))
}

/// The metadata server's tokens (GKE Workload Identity, a VM's service account).
async fn metadata_server() -> Result<Arc<dyn Authenticator>> {
    use yup_oauth2::authenticator::ApplicationDefaultCredentialsTypes as Adc;
    let opts = yup_oauth2::ApplicationDefaultCredentialsFlowOpts::default();
    let built = match yup_oauth2::ApplicationDefaultCredentialsAuthenticator::builder(opts).await {
        Adc::InstanceMetadata(b) => b.build().await,
        Adc::ServiceAccount(b) => b.build().await,
    };
    let auth = built.map_err(|e| BigQueryError::Client {
        context: "application-default credentials".into(),
        message: e.to_string(),
        transient: true,
    })?;
    Ok(Tokens::shared(auth))
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

/// The client library's client, and the same service for the calls it cannot decode.
pub struct Connection {
    pub client: Client,
    pub api: Api,
}

/// Direct REST calls, authenticated as the client is: the library decodes a table's
/// schema into a closed set of field types and fails on any other (RANGE, and whatever
/// BigQuery adds next), which would stop discovery of the whole dataset.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    auth: Arc<dyn Authenticator>,
}

impl Api {
    /// `GET {base}/{path}` as JSON; error answers become [`BigQueryError::Api`].
    pub async fn get(&self, what: &str, path: &str) -> Result<serde_json::Value> {
        let token = self.auth.access_token().await.context(what)?;
        let transient = |e: reqwest::Error| BigQueryError::Client {
            context: what.into(),
            message: e.without_url().to_string(),
            transient: true,
        };
        let answer = self
            .http
            .get(format!("{}/{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .map_err(transient)?;
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.map_err(transient)?;
        if status.is_success() {
            return Ok(body);
        }
        let error: gcp_bigquery_client::error::ResponseError = serde_json::from_value(body)
            .map_err(|e| BigQueryError::Client {
                context: what.into(),
                message: format!("HTTP {status} with an unreadable error ({e})"),
                transient: status.is_server_error(),
            })?;
        Err(BigQueryError::from_client(
            what,
            BQError::ResponseError { error },
        ))
    }
}

pub async fn connect(source: &BigQueryOptions, wait: Duration) -> Result<Connection> {
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
    builder.with_client(http.clone());
    let base = v2_base_url(
        source
            .endpoint
            .as_deref()
            .unwrap_or("https://bigquery.googleapis.com"),
    );
    builder.with_v2_base_url(base.clone());
    let adc = std::env::var("GOOGLE_APPLICATION_CREDENTIALS")
        .ok()
        .filter(|p| !p.is_empty());
    let auth: Arc<dyn Authenticator> = match (&source.credentials_path, &source.endpoint, adc) {
        (Some(path), _, _) => from_file("source.credentials_path", path).await?,
        (None, Some(_), _) => Arc::new(NoCredentials),
        (None, None, Some(path)) => from_file("GOOGLE_APPLICATION_CREDENTIALS", &path).await?,
        (None, None, None) => metadata_server().await?,
    };
    let client = builder
        .build_from_authenticator(Arc::clone(&auth))
        .await
        .context("connect")?;
    Ok(Connection {
        client,
        api: Api { http, base, auth },
    })
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
            let Err(e) = from_file("source.credentials_path", &path).await else {
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

    /// Tables start together and each asks for a token: one exchange serves them all.
    #[tokio::test]
    async fn concurrent_first_token_requests_share_one_exchange() {
        let subject = "subject-token";
        let sts = warp_e2e::fake_sts::FakeSts::start(subject).await;
        let dir = std::env::temp_dir().join(format!("warp-bq-sts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), subject).unwrap();
        let config = serde_json::json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": sts.token_url(),
            "service_account_impersonation_url": sts.impersonation_url("a@p.iam.gserviceaccount.com"),
            "credential_source": { "file": dir.join("token") }
        });
        std::fs::write(dir.join("wif.json"), config.to_string()).unwrap();
        let auth = from_file(
            "source.credentials_path",
            dir.join("wif.json").to_str().unwrap(),
        )
        .await
        .unwrap();
        let tokens = futures::future::join_all((0..8).map(|_| auth.access_token())).await;
        for t in tokens {
            assert_eq!(t.unwrap(), warp_e2e::fake_sts::ACCOUNT_TOKEN);
        }
        assert_eq!(sts.seen().len(), 2, "{:?}", sts.seen());
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
