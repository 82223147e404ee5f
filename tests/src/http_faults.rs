//! An HTTP proxy in front of the BigQuery emulator that answers as the real service does
//! where the emulator cannot: scripted error answers (a 403 `rateLimitExceeded`, a 503),
//! slow answers, and jobs that run in a region — query answers name the job's location
//! and `getQueryResults` without `location=` is "Not found", as for a regional dataset.
//! Tables can be made to require a partition filter: their metadata says so, and queries
//! without one are refused with the service's error ([`crate::partition_rule`]).
//! It records every exchange (method, path, status, result rows) for tests to count.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::partition_rule::PartitionRule;

/// What the proxy does to a request a rule matches.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answers in the upstream's place.
    Answer { status: u16, body: String },
    /// Holds the request this long, then relays it.
    Delay(Duration),
    /// Relays a query and answers it as a job still running (`jobComplete: false`, no
    /// rows, no bytes processed), as the service does when a query outlives its wait: the
    /// client then reads the finished job with `getQueryResults`.
    Unfinished,
}

impl Fault {
    /// An error answer in BigQuery's shape: the status, then `error.errors[].reason`.
    pub fn error(status: u16, reason: &str, message: &str) -> Self {
        Self::Answer {
            status,
            body: error_body(status, reason, message),
        }
    }
}

fn error_body(status: u16, reason: &str, message: &str) -> String {
    let state = match status {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        400 => "INVALID_ARGUMENT",
        404 => "NOT_FOUND",
        _ => "UNAVAILABLE",
    };
    serde_json::json!({ "error": {
        "code": status,
        "message": message,
        "errors": [{ "message": message, "domain": "global", "reason": reason }],
        "status": state,
    }})
    .to_string()
}

/// One exchange, as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// Path and query string.
    pub path: String,
    pub status: u16,
    /// The SQL of a `jobs.query` request.
    pub sql: Option<String>,
    /// The rows of a query result in the answer.
    pub rows: Option<usize>,
    /// The fault applied, if one was.
    pub fault: Option<String>,
}

impl Exchange {
    /// `jobs.query`: a new query.
    pub fn is_query(&self) -> bool {
        self.method == "POST"
            && self
                .path
                .split('?')
                .next()
                .unwrap_or("")
                .ends_with("/queries")
    }

    /// `jobs.getQueryResults`: a result page, or a wait on a running job.
    pub fn is_results(&self) -> bool {
        self.method == "GET" && self.path.contains("/queries/")
    }
}

struct Rule {
    method: &'static str,
    path: &'static str,
    fault: Fault,
    times: usize,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<Exchange>,
    /// `totalBytesProcessed` to report for every query (the emulator reports 0).
    processed: Option<u64>,
    /// The only bearer token accepted, when set (others: 401 as the service answers).
    bearer: Option<String>,
    /// Schema fields to describe as the service does, by table.
    fields: Vec<(String, serde_json::Value)>,
    /// Tables requiring a partition filter, with what their `tables.get` answer gains.
    partitioned: Vec<(PartitionRule, serde_json::Value)>,
    /// What other tables' `tables.get` answers gain (metadata the emulator drops).
    described: Vec<(String, serde_json::Value)>,
}

/// The proxy; it stops when dropped.
pub struct HttpFaults {
    pub port: u16,
    state: Arc<Mutex<State>>,
    _stop: oneshot::Sender<()>,
}

impl HttpFaults {
    /// Listens on a free port and relays to `upstream` (`host:port`). With `location`,
    /// jobs run "in" it: query answers carry it in `jobReference`, and result reads
    /// that do not name it are answered 404 `notFound`.
    pub async fn start(upstream: String, location: Option<&str>) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let proxy = Relay {
            upstream,
            location: location.map(str::to_owned),
            state: Arc::clone(&state),
        };
        let (port, stop) = crate::proxy::serve_http(move |req| {
            let proxy = proxy.clone();
            async move { proxy.handle(req).await }
        })
        .await;
        Self {
            port,
            state,
            _stop: stop,
        }
    }

    /// The next `times` requests of `method` whose path contains `path` get `fault`.
    pub fn add(&self, method: &'static str, path: &'static str, fault: Fault, times: usize) {
        self.state.lock().unwrap().rules.push(Rule {
            method,
            path,
            fault,
            times,
        });
    }

    /// `table` requires a filter on `column`: its `tables.get` answers gain the fields of
    /// `metadata` (partitioning as the service describes it), and queries reading it
    /// without such a filter are refused (400 `invalidQuery`).
    pub fn require_partition_filter(&self, table: &str, column: &str, metadata: serde_json::Value) {
        let rule = PartitionRule {
            table: table.into(),
            column: column.into(),
        };
        self.state
            .lock()
            .unwrap()
            .partitioned
            .push((rule, metadata));
    }

    /// `table`'s `tables.get` answers describe the schema field named as `field` is
    /// named with `field` (the emulator describes a RANGE column as a RECORD).
    pub fn describe_field(&self, table: &str, field: serde_json::Value) {
        self.state
            .lock()
            .unwrap()
            .fields
            .push((table.into(), field));
    }

    /// `table`'s `tables.get` answers gain the fields of `metadata` (clustering, sizes:
    /// what the service states and the emulator does not).
    pub fn describe_table(&self, table: &str, metadata: serde_json::Value) {
        self.state
            .lock()
            .unwrap()
            .described
            .push((table.into(), metadata));
    }

    /// Requests not authorized by `Bearer {token}` are answered 401 `authError`.
    pub fn require_bearer(&self, token: &str) {
        self.state.lock().unwrap().bearer = Some(format!("Bearer {token}"));
    }

    /// Every query answer reports `bytes` processed, as the service reports what it bills.
    pub fn bill(&self, bytes: u64) {
        self.state.lock().unwrap().processed = Some(bytes);
    }

    /// Faults scripted and not yet applied.
    pub fn pending(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .rules
            .iter()
            .map(|r| r.times)
            .sum()
    }

    /// Every exchange so far.
    pub fn log(&self) -> Vec<Exchange> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[derive(Clone)]
struct Relay {
    upstream: String,
    location: Option<String>,
    state: Arc<Mutex<State>>,
}

type Answer = Response<Full<Bytes>>;

fn answer(status: u16, body: impl Into<Bytes>) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(body.into()))
        .unwrap()
}

impl Relay {
    fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        let mut state = self.state.lock().unwrap();
        let rule = state
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(r.path))?;
        rule.times -= 1;
        Some(rule.fault.clone())
    }

    fn partition_refusal(&self, seen: &Exchange) -> Option<Fault> {
        let sql = seen.sql.as_deref().filter(|_| seen.is_query())?;
        let state = self.state.lock().unwrap();
        let message = state
            .partitioned
            .iter()
            .find_map(|(rule, _)| rule.refusal(sql))?;
        Some(Fault::error(400, "invalidQuery", &message))
    }

    async fn handle(&self, req: Request<Incoming>) -> Answer {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let path = parts
            .uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default();
        let mut seen = Exchange {
            method: parts.method.to_string(),
            path: path.clone(),
            status: 0,
            sql: serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|b| b.get("query")?.as_str().map(str::to_owned)),
            rows: None,
            fault: None,
        };
        let authorized = {
            let state = self.state.lock().unwrap();
            let given = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            state.bearer.as_deref().is_none_or(|b| given == Some(b))
        };
        let fault = if authorized {
            self.take_fault(&seen.method, &path)
                .or_else(|| self.partition_refusal(&seen))
        } else {
            Some(Fault::error(401, "authError", "Invalid Credentials"))
        };
        seen.fault = fault.as_ref().map(|f| format!("{f:?}"));
        let out = match fault {
            Some(Fault::Answer { status, body }) => answer(status, body),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.relay(&parts, body, &mut seen).await
            }
            Some(Fault::Unfinished) => {
                let relayed = self.relay(&parts, body, &mut seen).await;
                unfinished(relayed).await
            }
            None => match &self.location {
                Some(loc) if seen.is_results() && !path.contains(&format!("location={loc}")) => {
                    let job = path.rsplit('/').next().unwrap_or("").split('?').next();
                    let message = format!("Not found: Job {}", job.unwrap_or(""));
                    answer(404, error_body(404, "notFound", &message))
                }
                _ => self.relay(&parts, body, &mut seen).await,
            },
        };
        seen.status = out.status().as_u16();
        self.state.lock().unwrap().log.push(seen);
        out
    }

    async fn relay(
        &self,
        parts: &hyper::http::request::Parts,
        body: Bytes,
        seen: &mut Exchange,
    ) -> Answer {
        let Ok(stream) = TcpStream::connect(&self.upstream).await else {
            return answer(502, "upstream refused the connection");
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            return answer(502, "upstream handshake failed");
        };
        tokio::spawn(conn);
        let mut out = Request::builder()
            .method(parts.method.clone())
            .uri(seen.path.clone())
            .header("host", self.upstream.clone());
        for (name, value) in &parts.headers {
            if name != "host" && name != "content-length" && name != "transfer-encoding" {
                out = out.header(name, value);
            }
        }
        let Ok(resp) = sender
            .send_request(out.body(Full::new(body)).unwrap())
            .await
        else {
            return answer(502, "upstream failed");
        };
        let status = resp.status().as_u16();
        let Ok(bytes) = resp.into_body().collect().await.map(|b| b.to_bytes()) else {
            return answer(502, "upstream broke off");
        };
        let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return answer(status, bytes);
        };
        seen.rows = json.get("rows").and_then(|r| r.as_array()).map(Vec::len);
        let table = seen.path.split('?').next().unwrap_or("");
        if parts.method == "GET" && status == 200 {
            let state = self.state.lock().unwrap();
            let patch = state
                .partitioned
                .iter()
                .find(|(rule, _)| table.ends_with(&format!("/tables/{}", rule.table)));
            if let (Some((_, patch)), Some(meta)) = (patch, json.as_object_mut()) {
                meta.extend(patch.as_object().cloned().unwrap_or_default());
            }
            for (_, patch) in state
                .described
                .iter()
                .filter(|(t, _)| table.ends_with(&format!("/tables/{t}")))
            {
                if let Some(meta) = json.as_object_mut() {
                    meta.extend(patch.as_object().cloned().unwrap_or_default());
                }
            }
            let described = state
                .fields
                .iter()
                .filter(|(t, _)| table.ends_with(&format!("/tables/{t}")));
            for (_, field) in described {
                let fields = json
                    .pointer_mut("/schema/fields")
                    .and_then(|f| f.as_array_mut());
                for f in fields.into_iter().flatten() {
                    if f.get("name") == field.get("name") {
                        *f = field.clone();
                    }
                }
            }
        }
        if (seen.is_query() || seen.is_results()) && status == 200 {
            if let Some(loc) = &self.location {
                if let Some(job) = json.get_mut("jobReference").and_then(|j| j.as_object_mut()) {
                    job.insert("location".into(), loc.clone().into());
                }
            }
            // The service reports a finished job's bytes in its query answer and in every
            // answer of `getQueryResults`.
            let processed = self.state.lock().unwrap().processed;
            if let (Some(bytes), Some(answer)) = (processed, json.as_object_mut()) {
                // An int64 travels as a JSON string in BigQuery's API.
                answer.insert("totalBytesProcessed".into(), bytes.to_string().into());
            }
        }
        answer(status, json.to_string())
    }
}

/// `relayed`, a finished query's answer, turned into the answer of a job still running.
async fn unfinished(relayed: Answer) -> Answer {
    let status = relayed.status().as_u16();
    // A `Full` body cannot fail.
    let Ok(collected) = relayed.into_body().collect().await;
    let bytes = collected.to_bytes();
    let Ok(serde_json::Value::Object(mut json)) = serde_json::from_slice(&bytes) else {
        return answer(status, bytes);
    };
    if status == 200 {
        for gone in [
            "rows",
            "schema",
            "pageToken",
            "totalRows",
            "totalBytesProcessed",
        ] {
            json.remove(gone);
        }
        json.insert("jobComplete".into(), false.into());
    }
    answer(status, serde_json::Value::Object(json).to_string())
}
