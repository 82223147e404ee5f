//! Probe and status endpoints (docs/operations.md). Routing is a pure function of the path and the
//! shared state, so it is tested without a socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use warp_core::config::MonitoringConfig;
use warp_core::{StatusBoard, TableState};

use crate::status_page::StatusPage;

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    fn json(status: u16, body: &impl Serialize) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::to_string(body).unwrap_or_default(),
        }
    }
}

/// One replicated schema as the probes see it.
pub struct SchemaHealth {
    pub name: String,
    pub board: StatusBoard,
    /// Last source check succeeded.
    pub source_ok: AtomicBool,
}

/// What the probes answer from.
pub struct Health {
    pub schemas: Vec<SchemaHealth>,
    /// Last destination check succeeded.
    pub destination_ok: AtomicBool,
    page: Arc<StatusPage>,
    max_lag: Option<f64>,
    health: String,
    ready: String,
    startup: String,
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    reasons: Vec<String>,
}

impl Health {
    pub fn new(
        monitoring: &MonitoringConfig,
        schemas: Vec<(String, StatusBoard)>,
        page: Arc<StatusPage>,
    ) -> Self {
        Self {
            page,
            schemas: schemas
                .into_iter()
                .map(|(name, board)| SchemaHealth {
                    name,
                    board,
                    source_ok: AtomicBool::new(false),
                })
                .collect(),
            destination_ok: AtomicBool::new(false),
            max_lag: monitoring.readiness_max_lag_seconds.map(|s| s.get()),
            health: monitoring.health_endpoint.clone(),
            ready: monitoring.readiness_endpoint.clone(),
            startup: monitoring.startup_endpoint.clone(),
        }
    }

    pub fn started(&self) -> bool {
        self.schemas.iter().all(|s| s.board.is_started())
    }

    /// Why the process is not ready (empty when it is).
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.started() {
            reasons.push("start-up not finished (metadata schema, discovery)".to_owned());
        }
        if !self.destination_ok.load(Ordering::SeqCst) {
            reasons.push("destination unreachable".to_owned());
        }
        let now = Utc::now();
        for s in &self.schemas {
            if !s.source_ok.load(Ordering::SeqCst) {
                reasons.push(format!("{}: source unreachable", s.name));
            }
            for t in s.board.snapshot() {
                if !t.state.is_healthy() {
                    reasons.push(format!("{}.{}: {}", t.schema, t.table, t.state.as_str()));
                }
                if let (Some(max), Some(lag), TableState::Streaming) =
                    (self.max_lag, t.lag_seconds(now), t.state)
                {
                    if lag > max {
                        reasons.push(format!(
                            "{}.{}: lag {lag:.0}s over {max:.0}s",
                            t.schema, t.table
                        ));
                    }
                }
            }
        }
        reasons
    }

    /// The answer for `path` on the health port.
    pub fn route(&self, path: &str) -> Reply {
        if path == self.health {
            // Answering at all shows the runtime is responsive; never depends on databases.
            Reply::json(200, &serde_json::json!({ "status": "ok" }))
        } else if path == self.startup {
            let started = self.started();
            Reply::json(
                if started { 200 } else { 503 },
                &serde_json::json!({ "started": started }),
            )
        } else if path == self.ready {
            let reasons = self.not_ready();
            Reply::json(
                if reasons.is_empty() { 200 } else { 503 },
                &Readiness {
                    ready: reasons.is_empty(),
                    reasons,
                },
            )
        } else if path == "/status" {
            Reply {
                status: 200,
                content_type: "application/json",
                body: self.page.json(),
            }
        } else if path == "/" {
            Reply {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: crate::status_page::HTML.to_owned(),
            }
        } else {
            Reply {
                status: 404,
                content_type: "text/plain",
                body: "not found\n".into(),
            }
        }
    }
}

/// Shared handle.
pub type SharedHealth = Arc<Health>;

#[cfg(test)]
mod tests {
    use super::*;
    use warp_core::TableKey;

    fn health() -> Health {
        let board = StatusBoard::default();
        let process = crate::status_page::ProcessSummary::sample();
        let page = Arc::new(StatusPage::new(process, vec![board.clone()]));
        Health::new(
            &MonitoringConfig::default(),
            vec![("shop".into(), board)],
            page,
        )
    }

    #[test]
    fn liveness_never_depends_on_databases() {
        let h = health();
        assert_eq!(h.route("/health").status, 200);
        assert_eq!(h.route("/startup").status, 503);
        assert_eq!(h.route("/ready").status, 503);
        assert_eq!(h.route("/nope").status, 404);
    }

    #[test]
    fn ready_needs_start_databases_and_healthy_tables() {
        let h = health();
        let key = TableKey {
            schema: "shop".into(),
            table: "orders".into(),
        };
        h.schemas[0].board.mark_started();
        h.schemas[0].board.set_state(&key, TableState::Streaming);
        assert_eq!(h.route("/startup").status, 200);
        assert!(h.route("/ready").body.contains("destination unreachable"));
        h.destination_ok.store(true, Ordering::SeqCst);
        h.schemas[0].source_ok.store(true, Ordering::SeqCst);
        assert_eq!(h.route("/ready").status, 200);
        h.schemas[0].board.set_state(&key, TableState::Failed);
        let reply = h.route("/ready");
        assert_eq!(reply.status, 503);
        assert!(reply.body.contains("shop.orders: failed"), "{}", reply.body);
        assert!(h.route("/status").body.contains("\"table\":\"orders\""));
        let page = h.route("/");
        assert_eq!(page.status, 200);
        assert!(page.content_type.starts_with("text/html"));
    }
}
