//! `verify_ca` — the certificate must come from a trusted CA, whatever host name it
//! names — on mysql_async 0.37.1, whose rustls verifier cannot skip the name check: it
//! recognises a name mismatch by the text `NotValidForName`, which rustls no longer
//! prints (mysql_async issue #404, fixed upstream after 0.37.1).
//!
//! So one probe connection asks for TLS as the `mysql` client does (greeting, then an
//! SSL request), verifies the server's chain against the same roots, and reads a name
//! the certificate holds. The pool then verifies the chain and that name on every
//! connection (mysql_async's host-name override): exactly the trust `verify_ca` gives.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warp_core::TlsFailure;

use crate::error::{MysqlError, Result};

/// Capability flags of the SSL request: 4.1 protocol, SSL, secure connection.
const SSL_REQUEST_CAPABILITIES: u32 = 0x0000_0200 | 0x0000_0800 | 0x0000_8000;
const CLIENT_SSL: u16 = 0x0800;
/// utf8mb4_general_ci.
const CHARSET: u8 = 45;

/// The name to verify the server's certificate against: `host` when the certificate
/// names it, else a name it holds (once its chain to `roots` is verified).
pub(crate) async fn certificate_name(
    host: &str,
    port: u16,
    roots: RootCertStore,
) -> Result<String> {
    let fail = |message: String| MysqlError::Connection {
        context: "verify_ca probe".into(),
        message,
    };
    let mut tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let greeting = read_packet(&mut tcp)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !offers_tls(&greeting)? {
        return Err(MysqlError::Tls {
            context: "verify_ca probe".into(),
            failure: TlsFailure::NotOffered,
            source: None,
        });
    }
    tcp.write_all(&ssl_request())
        .await
        .map_err(|e| fail(e.to_string()))?;

    let verifier = Arc::new(ChainOnly::new(roots)?);
    let config = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|e| fail(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match connector.connect(name, tcp).await {
        Ok(mut tls) => {
            let _ = tls.shutdown().await;
        }
        Err(e) => {
            let failure =
                TlsFailure::find(&e).unwrap_or_else(|| TlsFailure::Handshake(e.to_string()));
            return Err(MysqlError::Tls {
                context: "verify_ca probe".into(),
                failure,
                source: None,
            });
        }
    }
    let seen = verifier
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match seen {
        Some(Seen::HostValid) => Ok(host.to_owned()),
        Some(Seen::OtherNames(der)) => name_in(&der),
        None => Err(fail("the server presented no certificate".into())),
    }
}

fn offers_tls(greeting: &[u8]) -> Result<bool> {
    let unexpected = || MysqlError::Connection {
        context: "verify_ca probe".into(),
        message: "unexpected greeting from the server".into(),
    };
    match greeting.first() {
        Some(10) => {}
        // An error packet instead of a greeting (too many connections, host blocked…).
        Some(0xff) => {
            let code = greeting
                .get(1..3)
                .map_or(0, |c| u16::from_le_bytes([c[0], c[1]]));
            let message =
                String::from_utf8_lossy(greeting.get(9..).unwrap_or_default()).into_owned();
            return Err(MysqlError::Server {
                context: "verify_ca probe".into(),
                code,
                message,
            });
        }
        _ => return Err(unexpected()),
    }
    // Protocol 10: version (NUL-terminated), thread id (4), scramble (8), filler (1),
    // then the lower capability flags (2).
    let version_end = greeting[1..]
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(unexpected)?
        + 1;
    let flags = version_end + 1 + 4 + 8 + 1;
    let lower = greeting.get(flags..flags + 2).ok_or_else(unexpected)?;
    Ok(u16::from_le_bytes([lower[0], lower[1]]) & CLIENT_SSL != 0)
}

fn ssl_request() -> [u8; 36] {
    let mut packet = [0u8; 36];
    packet[0] = 32; // payload length (3 bytes LE)
    packet[3] = 1; // sequence id: the answer to the greeting
    packet[4..8].copy_from_slice(&SSL_REQUEST_CAPABILITIES.to_le_bytes());
    packet[8..12].copy_from_slice(&(16u32 << 20).to_le_bytes());
    packet[12] = CHARSET;
    packet
}

async fn read_packet(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header).await?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await?;
    Ok(payload)
}

/// A DNS name the certificate holds (a wildcard stands for one label under it).
fn name_in(der: &[u8]) -> Result<String> {
    let cert = CertificateDer::from(der);
    let parsed = webpki::EndEntityCert::try_from(&cert).map_err(|e| MysqlError::Tls {
        context: "verify_ca probe".into(),
        failure: TlsFailure::BadCertificate(format!("{e:?}")),
        source: None,
    })?;
    let name = parsed
        .valid_dns_names()
        .next()
        .ok_or_else(|| MysqlError::Unsupported {
            message: "source.ssl_mode verify_ca: the server's certificate names no DNS host".into(),
            hint: Some(
                "connect with the address the certificate holds and use verify_identity".into(),
            ),
        })?;
    Ok(match name.strip_prefix("*.") {
        Some(domain) => format!("verify-ca.{domain}"),
        None => name.to_owned(),
    })
}

enum Seen {
    HostValid,
    OtherNames(Vec<u8>),
}

/// Verifies the chain; a valid chain with another host name is recorded, not refused.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<Seen>>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::HostValid => "HostValid",
            Self::OtherNames(_) => "OtherNames",
        })
    }
}

impl ChainOnly {
    fn new(roots: RootCertStore) -> Result<Self> {
        let inner = WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| MysqlError::Tls {
                context: "verify_ca probe".into(),
                failure: TlsFailure::Handshake(e.to_string()),
                source: None,
            })?;
        Ok(Self {
            inner,
            seen: Mutex::new(None),
        })
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let seen = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_) => Seen::HostValid,
            // webpki checks the chain before the name: this error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Seen::OtherNames(end_entity.to_vec()),
            Err(e) => return Err(e),
        };
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(seen);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssl_request_is_a_32_byte_packet_after_the_greeting() {
        let p = ssl_request();
        assert_eq!(&p[..4], &[32, 0, 0, 1]);
        assert_eq!(
            u32::from_le_bytes([p[4], p[5], p[6], p[7]]) & 0x0800,
            0x0800
        );
        assert!(p[13..].iter().all(|b| *b == 0));
    }

    #[test]
    fn greetings_say_whether_tls_is_offered() {
        // MariaDB 10.11's greeting shape: protocol 10, version, thread id, scramble,
        // filler, lower capability flags.
        let mut greeting = vec![10];
        greeting.extend(b"10.11.19-MariaDB\0");
        greeting.extend([7, 0, 0, 0]);
        greeting.extend(b"abcdefgh");
        greeting.push(0);
        greeting.extend(0xfffeu16.to_le_bytes());
        assert!(offers_tls(&greeting).unwrap());
        let n = greeting.len();
        greeting[n - 2..].copy_from_slice(&(0xfffeu16 & !CLIENT_SSL).to_le_bytes());
        assert!(!offers_tls(&greeting).unwrap());
        assert!(offers_tls(&[9]).is_err());
    }
}
