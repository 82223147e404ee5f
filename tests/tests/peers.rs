//! The peers the suites need are up (scripts/peers.sh started them).

use std::net::TcpStream;
use std::time::Duration;

use warp_e2e::{host_port, peer_url};

#[test]
fn every_peer_accepts_connections() {
    for var in [
        "WARP_TEST_PG_URL",
        "WARP_TEST_MARIADB_URL",
        "WARP_TEST_MONGO_URL",
        "WARP_TEST_BIGQUERY_URL",
    ] {
        let addr = host_port(&peer_url(var));
        let sock = addr
            .parse()
            .unwrap_or_else(|e| panic!("{var}: bad address {addr}: {e}"));
        TcpStream::connect_timeout(&sock, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{var} ({addr}): {e}"));
    }
}

#[test]
fn host_port_parses_peer_urls() {
    assert_eq!(host_port("mysql://root@127.0.0.1:3307"), "127.0.0.1:3307");
    assert_eq!(
        host_port("mongodb://127.0.0.1:27217/?directConnection=true"),
        "127.0.0.1:27217"
    );
    assert_eq!(
        host_port("postgresql://u:p@127.0.0.1:5432/postgres"),
        "127.0.0.1:5432"
    );
}
