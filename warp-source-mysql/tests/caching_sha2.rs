//! `caching_sha2_password`, MySQL 8's default authentication, which MariaDB does not have:
//! a server speaking MySQL 8.0's exact handshake (protocol 10 greeting naming the
//! plugin, "perform full authentication", the RSA public key on request) answers the
//! source's connections, so both of MySQL's full-authentication paths run through the
//! source's own connection setup: over plain text the password travels encrypted with
//! the server's RSA key (RSA-OAEP, XORed with the scramble), over TLS in clear inside
//! the encrypted session. The server decrypts with `openssl pkeyutl` and compares, so a
//! wrong password is refused as MySQL refuses it (1045).

use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use warp_core::Source;
use warp_e2e::tls::TlsPeers;

mod common;

const PASSWORD: &str = "s3cret-sha2";
/// Part 1 (8 bytes) and part 2 (12 bytes) of the greeting's scramble.
const SCRAMBLE: &[u8; 20] = b"abcdefgh0123456789AB";
const CLIENT_SSL: u32 = 0x0800;
/// LONG_PASSWORD, CONNECT_WITH_DB, PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION,
/// PLUGIN_AUTH, PLUGIN_AUTH_LENENC_CLIENT_DATA.
const CAPABILITIES: u32 = 0x0001 | 0x0008 | 0x0200 | 0x2000 | 0x8000 | 0x0008_0000 | 0x0020_0000;

/// What the server saw: one line per authentication.
type Journal = Arc<Mutex<Vec<String>>>;

struct FakeMysql8 {
    port: u16,
    journal: Journal,
}

impl FakeMysql8 {
    async fn start(peers: &TlsPeers, tls: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let journal = Journal::default();
        let key = format!("{}/server.key", tls_dir(peers));
        let acceptor = tls.then(|| acceptor(peers));
        let j = Arc::clone(&journal);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (j, key, acceptor) = (Arc::clone(&j), key.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let _ = connection(tcp, acceptor, &key, &j).await;
                });
            }
        });
        Self { port, journal }
    }

    fn journal(&self) -> Vec<String> {
        self.journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn tls_dir(peers: &TlsPeers) -> String {
    std::path::Path::new(&peers.ca())
        .parent()
        .unwrap()
        .display()
        .to_string()
}

fn acceptor(peers: &TlsPeers) -> tokio_rustls::TlsAcceptor {
    let dir = tls_dir(peers);
    let certs = CertificateDer::pem_file_iter(format!("{dir}/server-chain.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/server.key")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

type Io = std::io::Result<()>;

async fn connection(
    mut tcp: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    key: &str,
    journal: &Journal,
) -> Io {
    let capabilities = CAPABILITIES | if tls.is_some() { CLIENT_SSL } else { 0 };
    write(&mut tcp, 0, &greeting(capabilities)).await?;
    let (seq, first) = read(&mut tcp).await?;
    match tls {
        // A 32-byte answer is the SSL request: the real response comes inside TLS.
        Some(acceptor) if first.len() == 32 => {
            let mut secure = acceptor.accept(tcp).await?;
            let (seq, _response) = read(&mut secure).await?;
            authenticate(&mut secure, seq, true, key, journal).await?;
            serve(&mut secure, Some("TLSv1.3")).await
        }
        _ => {
            authenticate(&mut tcp, seq, false, key, journal).await?;
            serve(&mut tcp, None).await
        }
    }
}

/// Protocol 10 greeting of MySQL 8.0 with `caching_sha2_password`.
fn greeting(capabilities: u32) -> Vec<u8> {
    let mut p = vec![10];
    p.extend(b"8.0.36\0");
    p.extend(42u32.to_le_bytes());
    p.extend(&SCRAMBLE[..8]);
    p.push(0);
    p.extend((capabilities as u16).to_le_bytes());
    p.push(255); // utf8mb4_0900_ai_ci
    p.extend(2u16.to_le_bytes()); // SERVER_STATUS_AUTOCOMMIT
    p.extend(((capabilities >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend([0u8; 10]);
    p.extend(&SCRAMBLE[8..]);
    p.push(0);
    p.extend(b"caching_sha2_password\0");
    p
}

/// The empty cache of a fresh server: always "perform full authentication".
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    seq: u8,
    secure: bool,
    key: &str,
    journal: &Journal,
) -> Io {
    write(s, seq + 1, &[0x01, 0x04]).await?;
    let (seq, answer) = read(s).await?;
    let (how, password, seq) = if secure {
        ("clear text inside TLS", answer, seq)
    } else {
        assert_eq!(
            answer,
            [0x02],
            "a plain-text client must ask for the public key"
        );
        write(s, seq + 1, &[&[0x01][..], &public_key(key)].concat()).await?;
        let (seq, encrypted) = read(s).await?;
        let mut plain = decrypt(key, &encrypted);
        for (i, b) in plain.iter_mut().enumerate() {
            *b ^= SCRAMBLE[i % SCRAMBLE.len()];
        }
        ("RSA-encrypted with the server's key", plain, seq)
    };
    let ok = password == [PASSWORD.as_bytes(), &[0]].concat();
    journal
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!(
            "{how}: {}",
            if ok { "accepted" } else { "refused" }
        ));
    if ok {
        write(s, seq + 1, &[0, 0, 0, 2, 0, 0, 0]).await
    } else {
        let mut err = vec![0xff];
        err.extend(1045u16.to_le_bytes());
        err.extend(b"#28000Access denied for user 'warp'");
        write(s, seq + 1, &err).await
    }
}

/// Commands after authentication: OK to everything but the TLS-version question.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, tls_version: Option<&str>) -> Io {
    loop {
        let (_, command) = read(s).await?;
        match command.first() {
            Some(0x01) | None => return Ok(()),
            Some(0x03) if String::from_utf8_lossy(&command).contains("Ssl_version") => {
                let value = tls_version.unwrap_or("");
                for (seq, packet) in (1..).zip([
                    vec![2],
                    column("Variable_name"),
                    column("Value"),
                    vec![0xfe, 0, 0, 2, 0],
                    [lenenc("Ssl_version"), lenenc(value)].concat(),
                    vec![0xfe, 0, 0, 2, 0],
                ]) {
                    write(s, seq, &packet).await?;
                }
            }
            _ => write(s, 1, &[0, 0, 0, 2, 0, 0, 0]).await?,
        }
    }
}

fn lenenc(text: &str) -> Vec<u8> {
    [&[text.len() as u8][..], text.as_bytes()].concat()
}

fn column(name: &str) -> Vec<u8> {
    let mut c = [
        lenenc("def"),
        lenenc(""),
        lenenc(""),
        lenenc(""),
        lenenc(name),
        lenenc(name),
    ]
    .concat();
    c.push(0x0c);
    c.extend(255u16.to_le_bytes());
    c.extend(1024u32.to_le_bytes());
    c.push(0xfd); // VAR_STRING
    c.extend([0, 0, 0, 0, 0]);
    c
}

fn public_key(key: &str) -> Vec<u8> {
    openssl(&["pkey", "-in", key, "-pubout"], &[])
}

fn decrypt(key: &str, data: &[u8]) -> Vec<u8> {
    // MySQL's RSA_PKCS1_OAEP_PADDING: OAEP with SHA-1, openssl's default for oaep.
    openssl(
        &[
            "pkeyutl",
            "-decrypt",
            "-inkey",
            key,
            "-pkeyopt",
            "rsa_padding_mode:oaep",
        ],
        data,
    )
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}");
    out.stdout
}

async fn read<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<(u8, Vec<u8>)> {
    common::dump_proxy::read_packet(s).await
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, seq: u8, payload: &[u8]) -> Io {
    let len = payload.len() as u32;
    let mut packet = len.to_le_bytes()[..3].to_vec();
    packet.push(seq);
    packet.extend(payload);
    s.write_all(&packet).await?;
    s.flush().await
}

/// The source as configured, checking its connection (polling, so no binlog queries).
async fn check(url: &str, tls_keys: &str) -> warp_core::Result<warp_core::ConnectionSecurity> {
    common::source_config(
        &format!(
            "connection_string: '{url}', change_detection_strategy: timestamp, \
             change_detection_column: updated_at{tls_keys}"
        ),
        "shop",
    )?
    .check()
    .await
}

#[tokio::test]
async fn over_plain_text_the_password_goes_encrypted_with_the_servers_rsa_key() {
    let peers = TlsPeers::from_env();
    let server = FakeMysql8::start(&peers, false).await;
    // The default `preferred` finds no TLS offered and connects in plain text.
    let security = check(
        &format!("mysql://warp:{PASSWORD}@127.0.0.1:{}/shop", server.port),
        "",
    )
    .await
    .expect("authenticated");
    assert!(!security.encrypted());
    let journal = server.journal();
    assert!(!journal.is_empty());
    assert!(
        journal
            .iter()
            .all(|l| l == "RSA-encrypted with the server's key: accepted"),
        "{journal:?}"
    );

    let e = check(
        &format!("mysql://warp:wrong@127.0.0.1:{}/shop", server.port),
        "",
    )
    .await
    .expect_err("a wrong password is refused");
    assert!(e.to_string().contains("1045"), "{e}");
    assert!(!e.to_string().contains("wrong"), "{e}");
}

#[tokio::test]
async fn over_tls_the_password_goes_inside_the_verified_session() {
    let peers = TlsPeers::from_env();
    let server = FakeMysql8::start(&peers, true).await;
    let security = check(
        &format!("mysql://warp:{PASSWORD}@localhost:{}/shop", server.port),
        &format!(", ssl_enabled: true, ssl_ca: '{}'", peers.ca()),
    )
    .await
    .expect("authenticated over TLS");
    assert_eq!(security.tls_version.as_deref(), Some("TLSv1.3"));
    let journal = server.journal();
    assert!(!journal.is_empty());
    assert!(
        journal
            .iter()
            .all(|l| l == "clear text inside TLS: accepted"),
        "{journal:?}"
    );
}
