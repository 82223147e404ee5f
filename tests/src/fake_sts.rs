//! Google's two token endpoints of workload identity federation, as a test needs them:
//! the STS token exchange (`POST …/v1/token`, a subject token for a federated access
//! token, RFC 8693 form fields) and the service-account impersonation
//! (`POST …:generateAccessToken`, bearer the federated token, for the account's token).
//! Each answers in the real service's JSON shape and only for the expected input, so a
//! flow that skips a step or sends the wrong token gets no access token.

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use tokio::sync::oneshot;

/// The token a service account gets by impersonation.
pub const ACCOUNT_TOKEN: &str = "ya29.impersonated-for-the-test";
const FEDERATED_TOKEN: &str = "federated-for-the-test";
const EXCHANGE: &str = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";

/// The endpoints; they stop when dropped.
pub struct FakeSts {
    pub port: u16,
    /// Every request: `(path, accepted)`.
    seen: Arc<Mutex<Vec<(String, bool)>>>,
    _stop: oneshot::Sender<()>,
}

impl FakeSts {
    /// Accepts `subject_token` only.
    pub async fn start(subject_token: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, subject) = (Arc::clone(&seen), subject_token.to_owned());
        let (port, stop) = crate::proxy::serve_http(move |req| {
            let (log, subject) = (Arc::clone(&log), subject.clone());
            async move { answer(req, &subject, &log).await }
        })
        .await;
        Self {
            port,
            seen,
            _stop: stop,
        }
    }

    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/token", self.port)
    }

    pub fn impersonation_url(&self, account: &str) -> String {
        format!(
            "http://127.0.0.1:{}/v1/projects/-/serviceAccounts/{account}:generateAccessToken",
            self.port
        )
    }

    /// Every request so far: `(path, accepted)`.
    pub fn seen(&self) -> Vec<(String, bool)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    req: Request<Incoming>,
    subject: &str,
    log: &Mutex<Vec<(String, bool)>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let fields: Vec<&str> = body.split('&').collect();
    let (status, json) = if path == "/v1/token" {
        if fields.contains(&EXCHANGE)
            && fields.contains(&format!("subject_token={subject}").as_str())
        {
            (
                200,
                serde_json::json!({
                    "access_token": FEDERATED_TOKEN,
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": 3600
                }),
            )
        } else {
            let e = "The subject token is invalid.";
            (
                400,
                serde_json::json!({ "error": "invalid_grant", "error_description": e }),
            )
        }
    } else if path.ends_with(":generateAccessToken")
        && bearer.as_deref() == Some(&format!("Bearer {FEDERATED_TOKEN}"))
    {
        (
            200,
            serde_json::json!({ "accessToken": ACCOUNT_TOKEN, "expireTime": "2099-01-01T00:00:00Z" }),
        )
    } else {
        let e = "Request had invalid authentication credentials.";
        (
            401,
            serde_json::json!({ "error": { "code": 401, "message": e, "status": "UNAUTHENTICATED" } }),
        )
    };
    log.lock().unwrap().push((path, status == 200));
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap()
}
