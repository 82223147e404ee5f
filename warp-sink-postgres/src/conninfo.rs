//! The destination's connection string, read as libpq (and so `psql`) reads it: the URL
//! form or the `key=value` form, the `PG*` environment defaults, `~/.postgresql` files,
//! and libpq's TLS rules, which sqlx alone does not follow:
//! - `sslmode=require` with a root certificate present verifies the CA (as `verify-ca`);
//! - `verify-ca`/`verify-full` without a root certificate is an error, not a silent use
//!   of some other trust store;
//! - `sslrootcert=system` means the platform's trusted roots and implies `verify-full`.
//!
//! Parameters we cannot honour are refused by name instead of being ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use warp_core::Verification;

use crate::error::SinkError;

/// Parameters that are accepted because cartridge-warp already behaves as the value
/// asks (and only with those values).
const ALREADY_SO: &[(&str, &[&str])] = &[
    ("sslsni", &["1"]),
    ("gssencmode", &["disable", "prefer"]),
    ("channel_binding", &["disable", "prefer"]),
    ("sslcompression", &["0"]),
    ("target_session_attrs", &["any"]),
    ("load_balance_hosts", &["disable"]),
    ("sslnegotiation", &["postgres"]),
    ("keepalives", &["1"]),
    ("client_encoding", &["UTF8", "utf8", "UTF-8", "utf-8"]),
];

/// libpq's `sslmode` values that cartridge-warp supports (`allow` is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<Self, SinkError> {
        Ok(match text {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(invalid(
                    "sslmode=allow is not supported: use prefer (TLS when offered) or disable",
                ))
            }
            other => {
                return Err(invalid(format!(
                    "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }

    fn driver(self) -> PgSslMode {
        match self {
            Self::Disable => PgSslMode::Disable,
            Self::Prefer => PgSslMode::Prefer,
            Self::Require => PgSslMode::Require,
            Self::VerifyCa => PgSslMode::VerifyCa,
            Self::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// What the TLS settings of a connection string come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsPlan {
    pub mode: SslMode,
    /// The host name a `verify-full` connection checks the certificate against.
    pub host: String,
}

impl TlsPlan {
    pub fn verification(&self) -> Verification {
        match self.mode {
            SslMode::VerifyFull => Verification::Full {
                server_name: self.host.clone(),
            },
            SslMode::VerifyCa => Verification::Ca,
            _ => Verification::None,
        }
    }
}

/// A parsed destination connection string.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub options: PgConnectOptions,
    pub tls: TlsPlan,
    /// libpq's `connect_timeout` (seconds; below 2 counts as 2, 0 means no limit).
    pub connect_timeout: Option<Option<Duration>>,
    /// Whether the string names an `application_name` (else ours is used).
    pub has_application_name: bool,
}

/// Where libpq looks for its files when the string and environment name none.
#[derive(Debug, Clone, Default)]
pub(crate) struct Defaults {
    /// `PG*` variables (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`).
    pub env: BTreeMap<String, String>,
    /// `~/.postgresql`, when there is a home directory.
    pub dot_postgresql: Option<PathBuf>,
}

impl Defaults {
    pub fn from_process() -> Self {
        Self {
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("PG"))
                .collect(),
            dot_postgresql: std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql")),
        }
    }

    fn file(&self, name: &str) -> Option<PathBuf> {
        self.dot_postgresql
            .as_ref()
            .map(|d| d.join(name))
            .filter(|p| p.is_file())
    }
}

pub(crate) fn parse(text: &str, defaults: &Defaults) -> Result<ConnInfo, SinkError> {
    let mut params = if text.starts_with("postgresql://") || text.starts_with("postgres://") {
        from_url(text)?
    } else {
        from_keywords(text)?
    };
    let tls = tls_settings(&mut params, defaults)?;
    let connect_timeout = params
        .remove("connect_timeout")
        .map(|v| connect_timeout(&v))
        .transpose()?;
    for (key, allowed) in ALREADY_SO {
        if let Some(value) = params.remove(*key) {
            if !allowed.contains(&value.as_str()) {
                return Err(invalid(format!(
                    "{key}={value} is not supported (cartridge-warp behaves as {key}={})",
                    allowed[0]
                )));
            }
        }
    }
    if let Some(hostaddr) = params.remove("hostaddr") {
        if params.contains_key("host") {
            return Err(invalid(
                "hostaddr together with host is not supported: give one of them",
            ));
        }
        params.insert("host".into(), hostaddr);
    }
    if params.get("host").is_some_and(|h| h.contains(',')) {
        return Err(invalid(
            "several hosts are not supported: name one host (a primary, or a proxy in front of them)",
        ));
    }
    if let Some(fallback) = params.remove("fallback_application_name") {
        params.entry("application_name".into()).or_insert(fallback);
    }
    let has_application_name = params.contains_key("application_name");
    if let Some(unknown) = params
        .keys()
        .find(|k| !PASSED_TO_SQLX.contains(&k.as_str()))
    {
        return Err(invalid(format!(
            "parameter `{unknown}` is not supported by cartridge-warp; remove it"
        )));
    }

    // Everything left is what sqlx reads itself (it also applies ~/.pgpass).
    let mut url = url::Url::parse("postgresql:").map_err(|e| invalid(e.to_string()))?;
    url.query_pairs_mut().extend_pairs(params.iter());
    let mut options = PgConnectOptions::from_str(url.as_str())
        .map_err(|e| invalid(warp_core::mask_secrets(&e.to_string()).into_owned()))?
        .ssl_mode(tls.mode.driver());
    // Root certificates: the file chosen above, or none beyond the platform roots that
    // the TLS back end always loads (an empty PEM replaces what sqlx read from PGSSLROOTCERT).
    options = match &tls.root {
        Some(file) => options.ssl_root_cert(file),
        None => options.ssl_root_cert_from_pem(Vec::new()),
    };
    if let Some((cert, key)) = &tls.client {
        options = options.ssl_client_cert(cert).ssl_client_key(key);
    }
    let host = options.get_host().to_owned();
    // libpq ignores sslmode on a Unix socket (the server offers no TLS there).
    let mode = if options.get_socket().is_some() {
        options = options.ssl_mode(PgSslMode::Disable);
        SslMode::Disable
    } else {
        tls.mode
    };
    Ok(ConnInfo {
        options,
        tls: TlsPlan { mode, host },
        connect_timeout,
        has_application_name,
    })
}

/// Keywords handed to sqlx as they are.
const PASSED_TO_SQLX: &[&str] = &[
    "host",
    "port",
    "user",
    "password",
    "dbname",
    "application_name",
    "options",
];

fn invalid(message: impl Into<String>) -> SinkError {
    SinkError::Invalid(format!("destination.connection_string: {}", message.into()))
}

/// `postgresql://user:password@host:port/dbname?key=value&…`.
fn from_url(text: &str) -> Result<BTreeMap<String, String>, SinkError> {
    let url = url::Url::parse(text).map_err(|e| invalid(format!("not a valid URL: {e}")))?;
    let mut params = BTreeMap::new();
    let decode = |s: &str| {
        percent_decode(s).map_err(|_| invalid("the URL holds percent-encoding that is not UTF-8"))
    };
    if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        params.insert("host".into(), decode(host)?);
    }
    if let Some(port) = url.port() {
        params.insert("port".into(), port.to_string());
    }
    if !url.username().is_empty() {
        params.insert("user".into(), decode(url.username())?);
    }
    if let Some(password) = url.password() {
        params.insert("password".into(), decode(password)?);
    }
    let path = url.path().trim_start_matches('/');
    if !path.is_empty() {
        params.insert("dbname".into(), decode(path)?);
    }
    for (k, v) in url.query_pairs() {
        params.insert(canonical_key(&k).to_owned(), v.into_owned());
    }
    Ok(params)
}

/// sqlx's spellings of libpq keywords, accepted as they were before.
fn canonical_key(key: &str) -> &str {
    match key {
        "ssl-mode" => "sslmode",
        "ssl-root-cert" | "ssl-ca" => "sslrootcert",
        "ssl-cert" => "sslcert",
        "ssl-key" => "sslkey",
        other => other,
    }
}

fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

/// `host=db port=5432 user=warp password='a b\'c' sslmode=verify-full`.
fn from_keywords(text: &str) -> Result<BTreeMap<String, String>, SinkError> {
    let mut params = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(format!(
                "expected `{key}=value` (a postgresql:// URL or libpq key=value pairs)"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(invalid(format!("unterminated quote in `{key}`"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        params.insert(canonical_key(&key).to_owned(), value);
    }
    if params.is_empty() {
        return Err(invalid("empty"));
    }
    Ok(params)
}

fn connect_timeout(value: &str) -> Result<Option<Duration>, SinkError> {
    let secs: i64 = value.trim().parse().map_err(|_| {
        invalid(format!(
            "connect_timeout={value}: expected a whole number of seconds"
        ))
    })?;
    // libpq: zero or less waits forever; one second is raised to two.
    Ok(u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.max(2))))
}

struct TlsSettings {
    mode: SslMode,
    root: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
}

fn tls_settings(
    params: &mut BTreeMap<String, String>,
    defaults: &Defaults,
) -> Result<TlsSettings, SinkError> {
    let mut take = |key: &str, var: &str| {
        params
            .remove(key)
            .or_else(|| defaults.env.get(var).cloned())
            .filter(|v| !v.is_empty())
    };
    let mode_text = take("sslmode", "PGSSLMODE");
    let root_text = take("sslrootcert", "PGSSLROOTCERT");
    let cert_text = take("sslcert", "PGSSLCERT");
    let key_text = take("sslkey", "PGSSLKEY");
    if params.remove("sslpassword").is_some() {
        return Err(invalid(
            "sslpassword (an encrypted client key) is not supported: give sslkey an unencrypted PEM key file",
        ));
    }
    let system = root_text.as_deref() == Some("system");
    let mut mode = match mode_text.as_deref() {
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
        Some(m) => SslMode::parse(m)?,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(invalid(format!(
            "sslrootcert=system needs sslmode=verify-full (is {}): checking a public CA without the host name proves nothing",
            mode_text.unwrap_or_default()
        )));
    }
    let verifies = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
    let root = match (&root_text, system) {
        (_, true) => None,
        (Some(file), false) => {
            let path = PathBuf::from(file);
            if path.is_file() {
                Some(path)
            } else if verifies {
                return Err(invalid(format!(
                    "root certificate file {file} (sslrootcert) does not exist or is not a file"
                )));
            } else {
                None
            }
        }
        (None, false) => defaults.file("root.crt"),
    };
    if verifies && root.is_none() && !system {
        return Err(invalid(format!(
            "sslmode={} needs a root certificate: set sslrootcert=<CA file>, or sslrootcert=system for a publicly trusted server",
            mode_text.unwrap_or_default()
        )));
    }
    // libpq: with a root certificate present, `require` verifies the chain.
    if mode == SslMode::Require && root.is_some() {
        mode = SslMode::VerifyCa;
    }
    let client = match (cert_text, key_text) {
        (Some(cert), Some(key)) => Some((existing(&cert, "sslcert")?, existing(&key, "sslkey")?)),
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid("sslcert and sslkey go together"));
        }
        (None, None) => defaults
            .file("postgresql.crt")
            .zip(defaults.file("postgresql.key")),
    };
    Ok(TlsSettings { mode, root, client })
}

fn existing(file: &str, key: &str) -> Result<PathBuf, SinkError> {
    let path = PathBuf::from(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(invalid(format!(
            "{key}: {file} does not exist or is not a file"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_defaults() -> Defaults {
        Defaults::default()
    }

    fn parsed(text: &str) -> ConnInfo {
        parse(text, &no_defaults()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn refused(text: &str) -> String {
        parse(text, &no_defaults()).unwrap_err().to_string()
    }

    /// A file that exists, for root and client certificate paths.
    fn a_file(name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("warp-conninfo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, "pem").unwrap();
        path.display().to_string()
    }

    #[test]
    fn the_seed_string_reads_as_libpq_reads_it() {
        let c = parsed(
            "postgresql://warp_user:p%40ss@postgres.example.com:5432/warehouse?sslmode=require&connect_timeout=30",
        );
        assert_eq!(c.tls.mode, SslMode::Require);
        assert_eq!(c.tls.host, "postgres.example.com");
        assert_eq!(c.options.get_port(), 5432);
        assert_eq!(c.options.get_username(), "warp_user");
        assert_eq!(c.options.get_database(), Some("warehouse"));
        assert_eq!(c.connect_timeout, Some(Some(Duration::from_secs(30))));
        assert_eq!(c.tls.verification(), Verification::None);
    }

    #[test]
    fn keyword_form_with_quotes() {
        let ca = a_file("ca.crt");
        let c = parsed(&format!(
            "host=db.internal port = 6432 user=warp password='a b\\'c' dbname=dw sslmode=verify-full sslrootcert={ca}"
        ));
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.options.get_port(), 6432);
        assert_eq!(
            c.tls.verification(),
            Verification::Full {
                server_name: "db.internal".into()
            }
        );
        assert!(refused("host=db 'oops").contains("expected"));
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_ca() {
        let ca = a_file("root.crt");
        let c = parsed(&format!(
            "postgresql://u@h/d?sslmode=require&sslrootcert={ca}"
        ));
        assert_eq!(c.tls.mode, SslMode::VerifyCa);
        // The default file in ~/.postgresql counts too.
        let dir = Path::new(&ca).parent().unwrap().to_path_buf();
        let defaults = Defaults {
            env: BTreeMap::new(),
            dot_postgresql: Some(dir),
        };
        let c = parse("postgresql://u@h/d?sslmode=require", &defaults).unwrap();
        assert_eq!(c.tls.mode, SslMode::VerifyCa);
    }

    #[test]
    fn verifying_modes_need_a_root_certificate() {
        assert!(refused("postgresql://u@h/d?sslmode=verify-full").contains("sslrootcert"));
        assert!(
            refused("postgresql://u@h/d?sslmode=verify-ca&sslrootcert=/nonexistent/ca.crt")
                .contains("/nonexistent/ca.crt")
        );
        // `require` with a missing file just does not verify, as in libpq.
        let c = parsed("postgresql://u@h/d?sslmode=require&sslrootcert=/nonexistent/ca.crt");
        assert_eq!(c.tls.mode, SslMode::Require);
    }

    #[test]
    fn system_roots_imply_verify_full() {
        let c = parsed("postgresql://u@db.example.com/d?sslrootcert=system");
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert!(
            refused("postgresql://u@h/d?sslrootcert=system&sslmode=require")
                .contains("verify-full")
        );
    }

    #[test]
    fn environment_defaults_apply_and_the_string_wins() {
        let defaults = Defaults {
            env: [("PGSSLMODE".to_owned(), "require".to_owned())].into(),
            dot_postgresql: None,
        };
        let c = parse("postgresql://u@h/d", &defaults).unwrap();
        assert_eq!(c.tls.mode, SslMode::Require);
        let c = parse("postgresql://u@h/d?sslmode=disable", &defaults).unwrap();
        assert_eq!(c.tls.mode, SslMode::Disable);
        assert_eq!(parsed("postgresql://u@h/d").tls.mode, SslMode::Prefer);
    }

    #[test]
    fn client_certificates_go_in_pairs() {
        let (cert, key) = (a_file("client.crt"), a_file("client.key"));
        parsed(&format!(
            "postgresql://u@h/d?sslmode=require&sslcert={cert}&sslkey={key}"
        ));
        assert!(refused(&format!("postgresql://u@h/d?sslcert={cert}")).contains("together"));
    }

    #[test]
    fn parameters_we_cannot_honour_are_refused_by_name() {
        assert!(
            refused("postgresql://u@h/d?target_session_attrs=read-write")
                .contains("target_session_attrs=read-write")
        );
        assert!(refused("postgresql://u@h/d?krbsrvname=x").contains("`krbsrvname`"));
        assert!(refused("host=a,b user=u").contains("several hosts"));
        assert!(refused("postgresql://u@h/d?sslmode=allow").contains("allow"));
        parsed("postgresql://u@h/d?gssencmode=disable&channel_binding=prefer&sslsni=1");
    }

    #[test]
    fn sslmode_does_not_apply_to_unix_sockets() {
        let c = parsed("host=/var/run/postgresql dbname=dw sslmode=require");
        assert_eq!(c.tls.mode, SslMode::Disable);
        let c = parsed("postgresql:///dw?host=/var/run/postgresql&sslmode=require");
        assert_eq!(c.tls.mode, SslMode::Disable);
    }

    #[test]
    fn connect_timeout_follows_libpq() {
        let t = |v: &str| parsed(&format!("host=h connect_timeout={v}")).connect_timeout;
        assert_eq!(t("1"), Some(Some(Duration::from_secs(2))));
        assert_eq!(t("0"), Some(None));
        assert!(refused("host=h connect_timeout=soon").contains("connect_timeout"));
    }

    #[test]
    fn errors_never_carry_the_password() {
        let e = refused("postgresql://u:hunter2@h/d?sslmode=bogus");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
