//! TLS to MySQL/MariaDB in the `mysql` client's `--ssl-mode` terms, against the TLS
//! peers of `scripts/peers.sh start tls` (a MariaDB with `require_secure_transport=ON`
//! and a certificate for `localhost` from the test CA) and the plain binlog peer.

use std::time::Duration;

use common::Configured;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, SslOpts};
use warp_core::{Source, Value, Verification};
use warp_e2e::tls::{assert_verified, TlsPeers};

mod common;

/// A fresh database `cw_tls_<name>` on the TLS-only MariaDB, made over a verified
/// TLS connection.
async fn database(peers: &TlsPeers, name: &str) -> (mysql_async::Conn, String) {
    let db = format!("cw_tls_{name}");
    let opts = OptsBuilder::from_opts(Opts::from_url(&peers.mariadb_url("localhost", "")).unwrap())
        .ssl_opts(
            SslOpts::default().with_root_certs(vec![std::path::PathBuf::from(peers.ca()).into()]),
        )
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("admin connection");
    common::fresh_database(&mut conn, &db).await;
    conn.query_drop(format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20))"
    ))
    .await
    .unwrap();
    conn.query_drop(format!("INSERT INTO {db}.t VALUES (1, 'one'), (2, 'two')"))
        .await
        .unwrap();
    (conn, db)
}

fn source(url: &str, db: &str, tls_keys: &str) -> common::Configured {
    common::source_config(
        &format!(
            "connection_string: '{url}', server_id: {}{tls_keys}",
            common::server_id(3_500_000)
        ),
        db,
    )
    .expect("source")
}

async fn refused(source: &Configured, password: &str) -> (String, String) {
    warp_e2e::tls::refusal(source.check().await, password)
}

#[tokio::test]
async fn ssl_enabled_with_the_ca_snapshots_and_streams_the_binlog_over_tls() {
    let peers = TlsPeers::from_env();
    let (mut admin, db) = database(&peers, "stream").await;
    let source = source(
        &peers.mariadb_url("localhost", &db),
        &db,
        &format!(", ssl_enabled: true, ssl_ca: '{}'", peers.ca()),
    );
    let security = source.check().await.expect("verified TLS");
    assert_verified(
        &security,
        Verification::Full {
            server_name: "localhost".into(),
        },
    );
    let t = source.discover().await.unwrap().remove(0);
    let plan = source.plan_snapshot(&t, 100).await.unwrap();
    let mut copied = common::copy_all(&source, &t, 100).await;
    copied.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        copied,
        vec![
            vec![Value::Int(1), Value::Text("one".into())],
            vec![Value::Int(2), Value::Text("two".into())]
        ]
    );

    // The binlog reader connects on its own, over TLS too (the server refuses plain text).
    let mut stream = source
        .stream(&t, &plan.start)
        .await
        .expect("binlog over TLS");
    admin
        .query_drop(format!("INSERT INTO {db}.t VALUES (3, 'three')"))
        .await
        .unwrap();
    let change = loop {
        let fragment = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a binlog event in time")
            .expect("stream open")
            .expect("decoded");
        if let Some(warp_core::Change::Row(c)) = fragment.changes.into_iter().next() {
            break c;
        }
    };
    assert_eq!(
        change.after.map(|r| r.values),
        Some(vec![Value::Int(3), Value::Text("three".into())])
    );
}

#[tokio::test]
async fn verify_identity_refuses_a_host_name_the_certificate_does_not_hold() {
    let peers = TlsPeers::from_env();
    let (_admin, db) = database(&peers, "identity").await;
    let wrong_host = source(
        &peers.mariadb_url("127.0.0.1", &db),
        &db,
        &format!(", ssl_mode: verify_identity, ssl_ca: '{}'", peers.ca()),
    );
    let (text, hint) = refused(&wrong_host, &peers.password).await;
    assert!(text.contains("does not name the host"), "{text}");
    assert!(hint.contains("verify_ca"), "{hint}");
    // verify_ca checks the chain only.
    let ca_only = source(
        &peers.mariadb_url("127.0.0.1", &db),
        &db,
        &format!(", ssl_mode: verify_ca, ssl_ca: '{}'", peers.ca()),
    );
    assert_verified(&ca_only.check().await.expect("verify_ca"), Verification::Ca);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let peers = TlsPeers::from_env();
    let (_admin, db) = database(&peers, "other_ca").await;
    let s = source(
        &peers.mariadb_url("localhost", &db),
        &db,
        &format!(", ssl_enabled: true, ssl_ca: '{}'", peers.other_ca()),
    );
    let (text, hint) = refused(&s, &peers.password).await;
    assert!(text.contains("not signed by a trusted CA"), "{text}");
    assert!(hint.contains("source.ssl_ca"), "{hint}");
    // `required` encrypts without checking the certificate at all.
    let s = source(
        &peers.mariadb_url("localhost", &db),
        &db,
        ", ssl_mode: required",
    );
    assert_verified(&s.check().await.expect("required"), Verification::None);
}

#[tokio::test]
async fn plain_text_to_a_server_that_requires_tls_is_refused_with_the_reason() {
    let peers = TlsPeers::from_env();
    let (_admin, db) = database(&peers, "plain").await;
    let s = source(
        &peers.mariadb_url("localhost", &db),
        &db,
        ", ssl_enabled: false",
    );
    let (text, hint) = refused(&s, &peers.password).await;
    assert!(text.contains("1045"), "{text}");
    assert!(hint.contains("require_secure_transport"), "{hint}");
}

#[tokio::test]
async fn a_server_without_tls_fails_required_modes_and_serves_preferred_in_plain_text() {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    conn.query_drop("CREATE DATABASE IF NOT EXISTS cw_tls_none")
        .await
        .unwrap();
    let required = source(
        &format!("{url}/cw_tls_none"),
        "cw_tls_none",
        ", ssl_mode: required",
    );
    let (text, hint) = refused(&required, "-").await;
    assert!(text.contains("does not offer TLS"), "{text}");
    assert!(hint.contains("ssl_mode"), "{hint}");
    let preferred = source(&format!("{url}/cw_tls_none"), "cw_tls_none", "");
    let security = preferred.check().await.expect("preferred falls back");
    assert!(!security.encrypted(), "{security:?}");
}
