//! What every connector says about a secured connection: which TLS check failed (from
//! the rustls error inside a driver's error chain) and, for `validate
//! --check-connections`, how a working connection is protected.
//!
//! Every driver of this workspace speaks TLS through rustls, so one classifier serves
//! them all; each connector adds the hint naming its own configuration keys.

use std::error::Error as StdError;
use std::fmt;

use rustls::{AlertDescription, CertificateError};

/// The check that refused a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate does not chain to a trusted CA.
    UnknownCa,
    /// The certificate is valid, but not for the host name connected to.
    HostnameMismatch,
    /// The certificate (or one of its issuers) has expired.
    Expired,
    /// The certificate is not valid yet (check the clock).
    NotYetValid,
    /// The certificate was revoked, or is unusable for a server (bad signature, usage).
    BadCertificate(String),
    /// The server answered that it does not speak TLS on this port.
    NotOffered,
    /// The server refused our client certificate, or asked for one we did not send.
    ClientCertificateRejected,
    /// Anything else that broke the handshake (protocol versions, ciphers, …).
    Handshake(String),
}

impl TlsFailure {
    /// Finds the TLS failure inside a driver error's source chain: a `rustls::Error`
    /// itself, or wrapped in an `io::Error` (which hides it from `source()`).
    pub fn find(error: &(dyn StdError + 'static)) -> Option<Self> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(found) = Self::from_rustls_in(e) {
                return Some(found);
            }
            current = e.source();
        }
        None
    }

    fn from_rustls_in(e: &(dyn StdError + 'static)) -> Option<Self> {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(Self::from_rustls(r));
        }
        let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
        let r = inner.downcast_ref::<rustls::Error>()?;
        Some(Self::from_rustls(r))
    }

    /// Classifies a rustls error.
    pub fn from_rustls(e: &rustls::Error) -> Self {
        match e {
            rustls::Error::InvalidCertificate(c) => Self::from_certificate_error(c),
            rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateExpired
                | AlertDescription::AccessDenied,
            ) => Self::ClientCertificateRejected,
            // A plain-text answer where a TLS record was expected.
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                Self::NotOffered
            }
            other => Self::Handshake(other.to_string()),
        }
    }

    fn from_certificate_error(c: &CertificateError) -> Self {
        match c {
            CertificateError::UnknownIssuer => Self::UnknownCa,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Self::HostnameMismatch
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Self::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Self::NotYetValid
            }
            other => Self::BadCertificate(format!("{other:?}")),
        }
    }

    /// Classifies the text of a driver error that carries the rustls error only as a
    /// message (the MongoDB driver's server-selection errors do).
    pub fn from_message(text: &str) -> Option<Self> {
        let found = if text.contains("UnknownIssuer") {
            Self::UnknownCa
        } else if text.contains("NotValidForName") || text.contains("not valid for name") {
            Self::HostnameMismatch
        } else if text.contains("Expired") || text.contains("certificate expired") {
            Self::Expired
        } else if text.contains("NotValidYet") || text.contains("not valid yet") {
            Self::NotYetValid
        } else if text.contains("received corrupt message")
            || text.contains("InvalidContentType")
            || text.contains("peer is incompatible")
        {
            Self::NotOffered
        } else if text.contains("CertificateRequired") {
            Self::ClientCertificateRejected
        } else {
            return None;
        };
        Some(found)
    }

    /// A stable label (metrics, tests).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::HostnameMismatch => "hostname_mismatch",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadCertificate(_) => "bad_certificate",
            Self::NotOffered => "not_offered",
            Self::ClientCertificateRejected => "client_certificate_rejected",
            Self::Handshake(_) => "handshake",
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCa => {
                f.write_str("the server's certificate is not signed by a trusted CA")
            }
            Self::HostnameMismatch => {
                f.write_str("the server's certificate does not name the host connected to")
            }
            Self::Expired => f.write_str("the server's certificate has expired"),
            Self::NotYetValid => {
                f.write_str("the server's certificate is not valid yet (is the clock right?)")
            }
            Self::BadCertificate(why) => write!(f, "the server's certificate is unusable: {why}"),
            Self::NotOffered => f.write_str("the server does not offer TLS on this port"),
            Self::ClientCertificateRejected => {
                f.write_str("the server refused the client certificate (or wanted one)")
            }
            Self::Handshake(why) => write!(f, "the TLS handshake failed: {why}"),
        }
    }
}

/// How much of the server's identity a TLS connection checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Encrypted, but any certificate is accepted (`sslmode=require`, MySQL `required`).
    None,
    /// The certificate chains to a trusted CA; its host name is not checked.
    Ca,
    /// The certificate chains to a trusted CA and names this host.
    Full { server_name: String },
}

/// How a working connection is protected, as `validate --check-connections` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSecurity {
    /// TLS protocol version as the server reports it (`TLSv1.3`); `None` = plain text.
    pub tls_version: Option<String>,
    pub verification: Verification,
}

impl ConnectionSecurity {
    pub fn plain() -> Self {
        Self {
            tls_version: None,
            verification: Verification::None,
        }
    }

    pub fn encrypted(&self) -> bool {
        self.tls_version.is_some()
    }
}

impl fmt::Display for ConnectionSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(version) = &self.tls_version else {
            return f.write_str("not encrypted");
        };
        write!(f, "encrypted ({version}), ")?;
        match &self.verification {
            Verification::None => f.write_str("server certificate not verified"),
            Verification::Ca => {
                f.write_str("certificate verified against the CA, host name not checked")
            }
            Verification::Full { server_name } => {
                write!(f, "verified server name {server_name}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rustls_errors_inside_io_errors() {
        let rustls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        assert_eq!(TlsFailure::find(&io), Some(TlsFailure::UnknownCa));
        let plain = std::io::Error::other("connection reset");
        assert_eq!(TlsFailure::find(&plain), None);
    }

    #[test]
    fn reads_rustls_messages_as_drivers_print_them() {
        let cases = [
            (CertificateError::UnknownIssuer, TlsFailure::UnknownCa),
            (
                CertificateError::NotValidForName,
                TlsFailure::HostnameMismatch,
            ),
            (CertificateError::Expired, TlsFailure::Expired),
        ];
        for (cert, want) in cases {
            let text = format!(
                "Kind: I/O error: {}, labels: {{}}",
                rustls::Error::InvalidCertificate(cert)
            );
            assert_eq!(TlsFailure::from_message(&text), Some(want), "{text}");
        }
        assert_eq!(TlsFailure::from_message("connection refused"), None);
    }

    #[test]
    fn security_reads_as_a_sentence() {
        let full = ConnectionSecurity {
            tls_version: Some("TLSv1.3".into()),
            verification: Verification::Full {
                server_name: "db.internal".into(),
            },
        };
        assert_eq!(
            full.to_string(),
            "encrypted (TLSv1.3), verified server name db.internal"
        );
        assert_eq!(ConnectionSecurity::plain().to_string(), "not encrypted");
    }
}
