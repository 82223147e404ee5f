//! The TLS peers of `scripts/peers.sh start tls`: a test CA (and a second, unrelated
//! one), a private PostgreSQL that accepts only `hostssl`, a MariaDB with
//! `require_secure_transport`, and the MongoDB emulator behind TLS with a SCRAM user.
//! Their certificate names `localhost` only, so `127.0.0.1` is a host name it does not
//! hold.

use std::fmt::Debug;
use std::path::PathBuf;

use crate::peer_url;

/// Where the TLS peers listen and what they trust.
#[derive(Debug, Clone)]
pub struct TlsPeers {
    dir: PathBuf,
    /// The local password of the peers' test users (`warp_user`, `warp`, `admin`).
    pub password: String,
    pub pg_port: u16,
    pub mariadb_port: u16,
    pub mongo_port: u16,
}

impl TlsPeers {
    /// From the `WARP_TEST_*` variables; panics naming the one that is missing.
    pub fn from_env() -> Self {
        let port = |var: &str| {
            peer_url(var)
                .parse()
                .unwrap_or_else(|e| panic!("{var}: {e}"))
        };
        Self {
            dir: PathBuf::from(peer_url("WARP_TEST_TLS_DIR")),
            password: peer_url("WARP_TEST_TLS_PASSWORD"),
            pg_port: port("WARP_TEST_PG_TLS_PORT"),
            mariadb_port: port("WARP_TEST_MARIADB_TLS_PORT"),
            mongo_port: port("WARP_TEST_MONGO_TLS_PORT"),
        }
    }

    /// The CA that signed every peer's certificate.
    pub fn ca(&self) -> String {
        self.file("ca.crt")
    }

    /// A CA that signed nothing the peers present.
    pub fn other_ca(&self) -> String {
        self.file("other-ca.crt")
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The private PostgreSQL (database `warehouse`) at `host`, with `params` appended.
    pub fn pg_url(&self, host: &str, params: &str) -> String {
        format!(
            "postgresql://warp_user:{}@{host}:{}/warehouse?{params}",
            self.password, self.pg_port
        )
    }

    /// The TLS-only MariaDB as user `warp`, at `host`.
    pub fn mariadb_url(&self, host: &str, database: &str) -> String {
        format!(
            "mysql://warp:{}@{host}:{}/{database}",
            self.password, self.mariadb_port
        )
    }

    /// The seed Secret's MongoDB string with host, port and password made local.
    pub fn seed_mongo_url(&self) -> String {
        format!(
            "mongodb://admin:{}@localhost:{}/ecommerce_db?ssl=true&authSource=admin&replicaSet=rs0",
            self.password, self.mongo_port
        )
    }

    /// The seed Secret's PostgreSQL string with host, port and password made local.
    pub fn seed_pg_url(&self) -> String {
        self.pg_url("localhost", "sslmode=require&connect_timeout=30")
    }
}

/// The error and hint of a connection check that must be refused permanently (a TLS
/// refusal is never retried); neither may carry `password`.
pub fn refusal<T: Debug>(result: warp_core::Result<T>, password: &str) -> (String, String) {
    let e = result.expect_err("the connection must be refused");
    assert!(!e.is_transient(), "a TLS refusal is permanent: {e}");
    let (text, hint) = (e.to_string(), e.hint().unwrap_or_default());
    assert!(
        !text.contains(password) && !hint.contains(password),
        "{text} / {hint}"
    );
    (text, hint)
}

/// The connection is TLS 1.x (as the server reports it) and checked `verification`'s way.
pub fn assert_verified(
    security: &warp_core::ConnectionSecurity,
    verification: warp_core::Verification,
) {
    assert!(
        security
            .tls_version
            .as_deref()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{security:?}"
    );
    assert_eq!(security.verification, verification);
}
