//! Connection options from the config: the URL, the pool size, and TLS from the
//! `source.ssl_*` keys in the terms of the `mysql` client's `--ssl-mode`.
//!
//! `preferred` (the default, as in the `mysql` client) asks for TLS and falls back to
//! plain text only when the server does not offer TLS at all; the first connection
//! decides, and the pool and binlog readers then use what it found. Every stricter mode
//! either gets TLS or fails: it never falls back.

use std::path::PathBuf;

use mysql_async::{ClientIdentity, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts};
use tokio::sync::OnceCell;
use warp_core::config::{MysqlSslMode, SourceConfig};
use warp_core::{ConnectionSecurity, Verification};

use crate::error::{Context, MysqlError, Result};

/// Options for each way of connecting, and the one chosen on first use.
pub(crate) struct Connector {
    mode: MysqlSslMode,
    host: String,
    /// With TLS as the mode asks (plain text for `disabled`).
    first_choice: Opts,
    /// `preferred` only: plain text, when the server offers no TLS.
    fallback: Option<Opts>,
    chosen: OnceCell<Chosen>,
}

struct Chosen {
    pool: Pool,
    opts: Opts,
    encrypted: bool,
}

impl Connector {
    pub fn new(source: &SourceConfig, url: &str) -> Result<Self> {
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
        let host = opts.ip_or_hostname().to_owned();
        let base = OptsBuilder::from_opts(opts)
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        let tls = ssl_opts(source, mode)?;
        let first_choice = match &tls {
            // A local socket would bypass TLS: stay on TCP as the mode asks.
            Some(ssl) => base.clone().ssl_opts(ssl.clone()).prefer_socket(false),
            None => base.clone().ssl_opts(None),
        };
        let fallback = (mode == MysqlSslMode::Preferred).then(|| Opts::from(base.ssl_opts(None)));
        Ok(Self {
            mode,
            host,
            first_choice: Opts::from(first_choice),
            fallback,
            chosen: OnceCell::new(),
        })
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
        let encrypted = self.first_choice.ssl_opts().is_some();
        match mysql_async::Conn::new(self.first_choice.clone()).await {
            Ok(conn) => {
                let _ = conn.disconnect().await;
                Ok((self.first_choice.clone(), encrypted))
            }
            Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
                if self.fallback.is_some() =>
            {
                tracing::warn!("the MySQL source offers no TLS: connecting in plain text (source.ssl_mode: preferred)");
                Ok((self.fallback.clone().unwrap_or_else(|| self.first_choice.clone()), false))
            }
            Err(e) => Err(MysqlError::from_driver("connect", e)),
        }
    }

    /// The pool for queries and snapshot reads.
    pub async fn pool(&self) -> Result<Pool> {
        Ok(self.chosen().await?.pool.clone())
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
                message: "the connection's encryption is not what the TLS settings asked for".into(),
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
fn effective_mode(source: &SourceConfig, url: &Opts) -> Result<MysqlSslMode> {
    let keys_set = source.ssl_mode.is_some() || source.ssl_enabled.is_some();
    let mode = source.mysql_ssl_mode();
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
            hint: Some("keep one of the two: the TLS parameters of the URL or the source.ssl_* keys".into()),
        });
    }
    Ok(mode)
}

fn ssl_opts(source: &SourceConfig, mode: MysqlSslMode) -> Result<Option<SslOpts>> {
    if mode == MysqlSslMode::Disabled {
        return Ok(None);
    }
    let mut ssl = SslOpts::default()
        .with_danger_accept_invalid_certs(!matches!(
            mode,
            MysqlSslMode::VerifyCa | MysqlSslMode::VerifyIdentity
        ))
        .with_danger_skip_domain_validation(mode != MysqlSslMode::VerifyIdentity);
    // As the `mysql` client: the CA file given is the whole trust store. Without one, a
    // bundle named by SSL_CERT_FILE (the OpenSSL convention), else the public web roots.
    let ca = match &source.ssl_ca {
        Some(ca) => Some(readable(ca, "ssl_ca")?),
        None => std::env::var("SSL_CERT_FILE")
            .ok()
            .filter(|f| !f.is_empty())
            .map(|f| readable(&f, "ssl_ca (from SSL_CERT_FILE)"))
            .transpose()?,
    };
    if let Some(ca) = ca {
        ssl = ssl
            .with_root_certs(vec![ca.into()])
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
