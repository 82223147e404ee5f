//! TLS to PostgreSQL as libpq defines `sslmode`, against the TLS peers of
//! `scripts/peers.sh start tls` (a private cluster accepting only `hostssl`, with a
//! certificate for `localhost` from the test CA) and the machine's own PostgreSQL
//! (`ssl=on`, self-signed).

use warp_core::config::{load_str, ConfigOverrides, DestinationConfig, Environment};
use warp_core::{ConnectionSecurity, Sink, Verification};
use warp_e2e::tls::{assert_verified, TlsPeers};
use warp_sink_postgres::PostgresSink;

fn destination(url: &str) -> DestinationConfig {
    // A long connect timeout: a TLS failure must come back at once, not when it expires.
    let yaml = format!(
        "source: {{ type: mysql, connection_string: 'mysql://u@h/d' }}\n\
         destination: {{ type: postgresql, connection_string: '{url}', connection_timeout: 120 }}\n\
         schemas: [ {{ name: s }} ]\n"
    );
    load_str(
        &yaml,
        "test",
        &Environment::new(),
        &ConfigOverrides::default(),
    )
    .expect("config")
    .config
    .destination
}

async fn check(url: &str) -> warp_core::Result<ConnectionSecurity> {
    let sink = PostgresSink::connect_lazy(&destination(url)).map_err(warp_core::Error::from)?;
    sink.check().await
}

async fn refused(url: &str, password: &str) -> (String, String) {
    warp_e2e::tls::refusal(check(url).await, password)
}

#[tokio::test]
async fn verify_full_with_the_right_ca_is_encrypted_and_names_the_server() {
    let peers = TlsPeers::from_env();
    let url = peers.pg_url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", peers.ca()),
    );
    let security = check(&url).await.expect("verify-full against the test CA");
    assert_verified(
        &security,
        Verification::Full {
            server_name: "localhost".into(),
        },
    );
}

#[tokio::test]
async fn verify_full_with_another_ca_names_the_unknown_ca() {
    let peers = TlsPeers::from_env();
    let url = peers.pg_url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", peers.other_ca()),
    );
    let (text, hint) = refused(&url, &peers.password).await;
    assert!(text.contains("not signed by a trusted CA"), "{text}");
    assert!(hint.contains("sslrootcert"), "{hint}");
}

#[tokio::test]
async fn verify_full_against_a_host_name_not_in_the_certificate_fails() {
    let peers = TlsPeers::from_env();
    let url = peers.pg_url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", peers.ca()),
    );
    let (text, hint) = refused(&url, &peers.password).await;
    assert!(text.contains("does not name the host"), "{text}");
    assert!(hint.contains("verify-ca"), "{hint}");
    // verify-ca checks the chain only, so the same host passes.
    let url = peers.pg_url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", peers.ca()),
    );
    let security = check(&url).await.expect("verify-ca ignores the host name");
    assert_eq!(security.verification, Verification::Ca);
}

#[tokio::test]
async fn plain_text_to_a_server_that_wants_tls_says_so() {
    let peers = TlsPeers::from_env();
    let (text, hint) = refused(
        &peers.pg_url("localhost", "sslmode=disable"),
        &peers.password,
    )
    .await;
    assert!(text.contains("no encryption"), "{text}");
    assert!(hint.contains("only TLS"), "{hint}");
}

#[tokio::test]
async fn require_reaches_the_machines_self_signed_server_and_verify_full_does_not() {
    let peers = TlsPeers::from_env();
    let base = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let sep = if base.contains('?') { '&' } else { '?' };
    let security = check(&format!("{base}{sep}sslmode=require"))
        .await
        .expect("require accepts any certificate");
    assert!(security.encrypted(), "{security:?}");
    assert_eq!(security.verification, Verification::None);
    // Its certificate is self-signed: no CA of ours vouches for it.
    let (text, _) = refused(
        &format!("{base}{sep}sslmode=verify-full&sslrootcert={}", peers.ca()),
        &peers.password,
    )
    .await;
    assert!(text.contains("TLS"), "{text}");
}

#[tokio::test]
async fn verifying_without_a_root_certificate_is_refused_before_connecting() {
    let peers = TlsPeers::from_env();
    let e = PostgresSink::connect_lazy(&destination(
        &peers.pg_url("localhost", "sslmode=verify-full"),
    ))
    .err()
    .expect("no root certificate");
    assert!(e.to_string().contains("sslrootcert"), "{e}");
}
