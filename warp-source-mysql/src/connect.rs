//! Connection options from the config: the URL, the pool size, and TLS from the
//! `source.ssl_*` keys in the terms of the `mysql` client's `--ssl-mode`.
//!
//! `preferred` (the default, as in the `mysql` client) asks for TLS and falls back to
//! plain text only when the server does not offer TLS at all; the first connection
//! decides, and the pool and binlog readers then use what it found. Every stricter mode
//! either gets TLS or fails: it never falls back.

use std::path::PathBuf;
use std::time::Duration;

use crate::options::{MysqlOptions, MysqlSslMode};
use mysql_async::{ClientIdentity, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use tokio::sync::OnceCell;
use warp_core::{ConnectionSecurity, Verification};

use crate::ca_probe;
use crate::error::{Context, MysqlError, Result};

/// How long an idle pooled connection is kept (`connection_pool_max_idle_time`).
const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(300);

/// Options for each way of connecting, and the one chosen on first use.
pub(crate) struct Connector {
    mode: MysqlSslMode,
    host: String,
    port: u16,
    /// Pool size and the URL's options, before TLS.
    base: OptsBuilder,
    /// TLS as the mode asks (`None` for `disabled`).
    ssl: Option<SslOpts>,
    /// The trusted CAs, for the `verify_ca` probe.
    ca: Option<PathBuf>,
    chosen: OnceCell<Chosen>,
}

struct Chosen {
    pool: Pool,
    opts: Opts,
    encrypted: bool,
}

impl Connector {
    pub fn new(source: &MysqlOptions, url: &str) -> Result<Self> {
        let opts = Opts::from_url(url).map_err(|e| MysqlError::Unsupported {
            message: format!(
                "source.connection_string: {}",
                warp_core::mask_secrets(&e.to_string())
            ),
            hint: None,
        })?;
        let mode = effective_mode(source, &opts)?;
        let max = source
            .connection_pool_size
            .map_or(10, |p| p.as_usize())
            .max(2);
        let constraints = PoolConstraints::new(0, max).unwrap_or_default();
        // With no idle lifetime, mysql_async keeps no idle connection above the minimum
        // (0): every returned connection would be closed and the next use reconnect.
        let idle = source
            .connection_pool_max_idle_time
            .map_or(DEFAULT_MAX_IDLE, |s| s.as_duration());
        let pool = PoolOpts::default()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(idle)
            .with_ttl_check_interval(idle.min(DEFAULT_MAX_IDLE / 10));
        let (host, port) = (opts.ip_or_hostname().to_owned(), opts.tcp_port());
        let base = OptsBuilder::from_opts(opts).pool_opts(pool);
        let ca = trusted_ca(source)?;
        let ssl = ssl_opts(source, mode, ca.as_ref())?;
        Ok(Self {
            mode,
            host,
            port,
            base,
            ssl,
            ca,
            chosen: OnceCell::new(),
        })
    }

    /// The options TLS asks for; `verify_ca` first learns which name to verify.
    async fn first_choice(&self) -> Result<Opts> {
        // Always the host and port the connection string names: the driver would
        // otherwise switch to the server's Unix socket when the host is local, past a
        // local proxy (Cloud SQL Auth Proxy, a port-forward) or TLS.
        let Some(ssl) = self.ssl.clone() else {
            return Ok(Opts::from(
                self.base.clone().ssl_opts(None).prefer_socket(false),
            ));
        };
        let ssl = if self.mode == MysqlSslMode::VerifyCa {
            let name = ca_probe::certificate_name(&self.host, self.port, self.roots()?).await?;
            ssl.with_danger_tls_hostname_override(Some(name))
        } else {
            ssl
        };
        Ok(Opts::from(
            self.base.clone().ssl_opts(ssl).prefer_socket(false),
        ))
    }

    /// The roots the pool's connections trust, for the probe to trust the same.
    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        let Some(ca) = &self.ca else {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            return Ok(roots);
        };
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| file_error("ssl_ca", &ca.display().to_string(), &e.to_string()))?;
        roots.add_parsable_certificates(certs);
        Ok(roots)
    }

    async fn chosen(&self) -> Result<&Chosen> {
        self.chosen
            .get_or_try_init(|| async {
                let (opts, encrypted) = self.choose().await?;
                Ok(Chosen {
                    pool: Pool::new(opts.clone()),
                    opts,
                    encrypted,
                })
            })
            .await
    }

    async fn choose(&self) -> Result<(Opts, bool)> {
        let first_choice = self.first_choice().await?;
        let encrypted = first_choice.ssl_opts().is_some();
        match mysql_async::Conn::new(first_choice.clone()).await {
            Ok(conn) => {
                let _ = conn.disconnect().await;
                Ok((first_choice, encrypted))
            }
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if self.mode == MysqlSslMode::Preferred => {
                tracing::warn!("the MySQL source offers no TLS: connecting in plain text (source.ssl_mode: preferred)");
                // Still the named host and port, never the server's Unix socket.
                Ok((
                    Opts::from(self.base.clone().ssl_opts(None).prefer_socket(false)),
                    false,
                ))
            }
            Err(e) => Err(MysqlError::from_driver("connect", e)),
        }
    }

    /// The pool for queries and snapshot reads.
    pub async fn pool(&self) -> Result<Pool> {
        Ok(self.chosen().await?.pool.clone())
    }

    /// A connection from the pool.
    pub async fn conn(&self) -> Result<mysql_async::Conn> {
        self.chosen()
            .await?
            .pool
            .get_conn()
            .await
            .context("connect")
    }

    /// Options for a connection outside the pool (a binlog reader holds its own).
    pub async fn opts(&self) -> Result<Opts> {
        Ok(self.chosen().await?.opts.clone())
    }

    /// How the connections are protected, with the TLS version the server reports.
    pub async fn security(&self) -> Result<ConnectionSecurity> {
        let chosen = self.chosen().await?;
        let mut conn = chosen.pool.get_conn().await.context("connect")?;
        let version: Option<(String, String)> = mysql_async::prelude::Queryable::query_first(
            &mut conn,
            "SHOW SESSION STATUS LIKE 'Ssl_version'",
        )
        .await
        .context("read connection security")?;
        let version = version.map(|(_, v)| v).filter(|v| !v.is_empty());
        if version.is_some() != chosen.encrypted {
            return Err(MysqlError::Unsupported {
                message: "the connection's encryption is not what the TLS settings asked for"
                    .into(),
                hint: None,
            });
        }
        let verification = match self.mode {
            MysqlSslMode::VerifyIdentity => Verification::Full {
                server_name: self.host.clone(),
            },
            MysqlSslMode::VerifyCa => Verification::Ca,
            _ => Verification::None,
        };
        Ok(ConnectionSecurity {
            tls_version: version,
            verification,
        })
    }
}

/// The mode from the keys; a URL that asks for TLS itself (`require_ssl=true`) is kept
/// when no key says otherwise, and refused when a key contradicts it.
fn effective_mode(source: &MysqlOptions, url: &Opts) -> Result<MysqlSslMode> {
    let keys_set = source.ssl_mode.is_some() || source.ssl_enabled.is_some();
    let mode = source.ssl_mode();
    let Some(url_tls) = url.ssl_opts() else {
        return Ok(mode);
    };
    let url_mode = if url_tls.accept_invalid_certs() {
        MysqlSslMode::Required
    } else if url_tls.skip_domain_validation() {
        MysqlSslMode::VerifyCa
    } else {
        MysqlSslMode::VerifyIdentity
    };
    if !keys_set {
        return Ok(url_mode);
    }
    if !mode.requires_tls() {
        return Err(MysqlError::Unsupported {
            message: format!(
                "source.connection_string asks for TLS (require_ssl) but source.ssl_mode is {}",
                mode.as_str()
            ),
            hint: Some(
                "keep one of the two: the TLS parameters of the URL or the source.ssl_* keys"
                    .into(),
            ),
        });
    }
    Ok(mode)
}

/// As the `mysql` client: the CA file given is the whole trust store. Without one, a
/// bundle named by SSL_CERT_FILE (the OpenSSL convention), else the public web roots.
fn trusted_ca(source: &MysqlOptions) -> Result<Option<PathBuf>> {
    match &source.ssl_ca {
        Some(ca) => Ok(Some(readable(ca, "ssl_ca")?)),
        None => std::env::var("SSL_CERT_FILE")
            .ok()
            .filter(|f| !f.is_empty())
            .map(|f| readable(&f, "ssl_ca (from SSL_CERT_FILE)"))
            .transpose(),
    }
}

fn ssl_opts(
    source: &MysqlOptions,
    mode: MysqlSslMode,
    ca: Option<&PathBuf>,
) -> Result<Option<SslOpts>> {
    if mode == MysqlSslMode::Disabled {
        return Ok(None);
    }
    // verify_ca checks the name the probe found (see ca_probe), so no mode skips the
    // name check inside mysql_async.
    let mut ssl = SslOpts::default().with_danger_accept_invalid_certs(!matches!(
        mode,
        MysqlSslMode::VerifyCa | MysqlSslMode::VerifyIdentity
    ));
    if let Some(ca) = ca {
        ssl = ssl
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true);
    }
    if let (Some(cert), Some(key)) = (&source.ssl_cert, &source.ssl_key) {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            readable(cert, "ssl_cert")?.into(),
            readable(key, "ssl_key")?.into(),
        )));
    }
    Ok(Some(ssl))
}

/// The path of a certificate or key file, refused with its key when it cannot be read.
fn readable(path: &str, key: &str) -> Result<PathBuf> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(PathBuf::from(path)),
        Ok(_) => Err(file_error(key, path, "not a file")),
        Err(e) => Err(file_error(key, path, &e.to_string())),
    }
}

fn file_error(key: &str, path: &str, why: &str) -> MysqlError {
    MysqlError::Unsupported {
        message: format!("source.{key}: cannot read {path}: {why}"),
        hint: Some(format!(
            "mount the file (a Kubernetes Secret volume) at that path or correct source.{key}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_opts(options: &MysqlOptions) -> PoolOpts {
        let c = Connector::new(options, "mysql://u@db.example/shop").unwrap();
        Opts::from(c.base).pool_opts().clone()
    }

    #[test]
    fn idle_connections_are_kept_for_reuse() {
        // An idle lifetime of zero would make mysql_async close every returned
        // connection (its idle bound is then the pool's minimum, 0).
        let default = pool_opts(&MysqlOptions::default());
        assert_eq!(default.inactive_connection_ttl(), DEFAULT_MAX_IDLE);
        assert_eq!(default.constraints().max(), 10);
        let tuned = pool_opts(&MysqlOptions {
            connection_pool_size: Some(serde_json::from_str("4").unwrap()),
            connection_pool_max_idle_time: Some(serde_json::from_str("20").unwrap()),
            ..MysqlOptions::default()
        });
        assert_eq!(tuned.inactive_connection_ttl(), Duration::from_secs(20));
        assert_eq!(tuned.ttl_check_interval(), Duration::from_secs(20));
        assert_eq!(tuned.constraints().max(), 4);
    }
}
