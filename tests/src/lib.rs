//! Support for end-to-end suites: where the database peers started by
//! `scripts/peers.sh` listen. A suite that needs a peer fails loudly when it is missing;
//! it never skips silently.

/// The URL of a peer from its `WARP_TEST_*` variable (`scripts/peers.sh env` prints them).
pub fn peer_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start the peers with `scripts/peers.sh start` and export `scripts/peers.sh env`, or run scripts/test.sh")
    })
}

/// `host:port` of a URL such as `mysql://root@127.0.0.1:3307`.
pub fn host_port(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?'])
        .next()
        .unwrap_or(after_scheme);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, hp)| hp)
        .to_owned()
}
