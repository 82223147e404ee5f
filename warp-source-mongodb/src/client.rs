//! Driver options from the config (docs/configuration.md): the connection string first, then the
//! explicit `source.*` keys on top of it.

use std::path::PathBuf;
use std::time::Duration;

use mongodb::options::{ClientOptions, ReadPreference, SelectionCriteria, Tls, TlsOptions};
use mongodb::Client;
use warp_core::config::SourceConfig;

use crate::options::{MongoOptions, ReadPreference as ConfiguredReadPreference};
use warp_core::{mask_secrets, ConnectionSecurity, Error, Verification};

/// A connected client and how its connections are protected.
pub struct Connected {
    pub client: Client,
    pub security: ConnectionSecurity,
}

/// The driver's own pool size when nothing sets one.
const DRIVER_POOL_SIZE: u32 = 10;

/// Connects; `pool_floor` is how many connections the schema can use at once (its
/// parallel chunk reads, the change stream's `getMore`, a poll), the pool's size when
/// neither `source.connection_pool_size` nor the URI's `maxPoolSize` sets one.
pub async fn connect(
    source: &SourceConfig,
    keys: &MongoOptions,
    pool_floor: u32,
) -> warp_core::Result<Connected> {
    let url = source
        .connection_string
        .as_ref()
        .ok_or_else(|| Error::source_permanent("source.connection_string is required", None))?;
    let mut options = ClientOptions::parse(url.expose()).await.map_err(|e| {
        Error::source_permanent(
            format!("source.connection_string: {}", mask_secrets(&e.to_string())),
            None,
        )
    })?;
    apply(keys, &mut options, pool_floor);
    trust_platform_ca_file(
        &mut options,
        std::env::var_os(SSL_CERT_FILE).map(PathBuf::from),
    );
    let security = security(&options);
    let client = Client::with_options(options).map_err(|e| {
        Error::source_permanent(format!("source: {}", mask_secrets(&e.to_string())), None)
    })?;
    Ok(Connected { client, security })
}

/// The OpenSSL convention for naming a CA bundle; `psql` and `mysql` honour it too.
const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// Without `tlsCAFile`, the driver trusts only the public web roots compiled into it; a
/// CA bundle named by `SSL_CERT_FILE` (a private CA mounted into the pod) is used instead,
/// as every other connection of the process does.
fn trust_platform_ca_file(options: &mut ClientOptions, file: Option<PathBuf>) {
    if let (Some(Tls::Enabled(tls)), Some(file)) = (options.tls.as_mut(), file) {
        if tls.ca_file_path.is_none() && !file.as_os_str().is_empty() {
            tls.ca_file_path = Some(file);
        }
    }
}

/// What the options ask of TLS. The driver does not report the negotiated version;
/// it never connects in plain text when TLS is on.
fn security(options: &ClientOptions) -> ConnectionSecurity {
    let Some(Tls::Enabled(tls)) = &options.tls else {
        return ConnectionSecurity::plain();
    };
    // rustls always checks the host name (the driver refuses tlsAllowInvalidHostnames).
    let verification = if tls.allow_invalid_certificates == Some(true) {
        Verification::None
    } else {
        let hosts: Vec<String> = options.hosts.iter().map(ToString::to_string).collect();
        Verification::Full {
            server_name: hosts.join(","),
        }
    };
    ConnectionSecurity {
        tls_version: Some("TLS 1.2+".into()),
        verification,
    }
}

fn apply(source: &MongoOptions, options: &mut ClientOptions, pool_floor: u32) {
    options
        .app_name
        .get_or_insert_with(|| "cartridge-warp".to_owned());
    // `replica_set: ""` means "no replica set": a direct connection to one server.
    if let Some(set) = &source.replica_set {
        options.repl_set_name = (!set.is_empty()).then(|| set.clone());
    }
    if let Some(auth) = &source.auth_source {
        if let Some(credential) = options.credential.as_mut() {
            credential.source = Some(auth.clone());
        }
    }
    // `ssl_enabled` switches TLS on or off; the URI's TLS options (tlsCAFile,
    // tlsCertificateKeyFile, tlsAllowInvalidHostnames, …) stay as written.
    match (source.ssl_enabled, &options.tls) {
        (Some(true), Some(Tls::Enabled(_))) | (None, _) => {}
        (Some(true), _) => options.tls = Some(Tls::Enabled(TlsOptions::default())),
        (Some(false), _) => options.tls = Some(Tls::Disabled),
    }
    if let Some(p) = source.read_preference {
        let pref = match p {
            ConfiguredReadPreference::Primary => ReadPreference::Primary,
            ConfiguredReadPreference::PrimaryPreferred => {
                ReadPreference::PrimaryPreferred { options: None }
            }
            ConfiguredReadPreference::Secondary => ReadPreference::Secondary { options: None },
            ConfiguredReadPreference::SecondaryPreferred => {
                ReadPreference::SecondaryPreferred { options: None }
            }
            ConfiguredReadPreference::Nearest => ReadPreference::Nearest { options: None },
        };
        options.selection_criteria = Some(SelectionCriteria::ReadPreference(pref));
    }
    if let Some(size) = source.connection_pool_size {
        options.max_pool_size = u32::try_from(size.get()).ok();
    }
    // Unset by the key and the URI: room for everything the schema runs at once, so
    // chunk reads never queue behind each other for a connection.
    options
        .max_pool_size
        .get_or_insert(DRIVER_POOL_SIZE.max(pool_floor));
    if let Some(idle) = source.connection_pool_max_idle_time {
        options.max_idle_time = Some(idle.as_duration());
    }
    // Fail over within seconds rather than the driver's 30 s default: the engine retries.
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(10));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn config_keys_override_the_connection_string() {
        let yaml = "type: mongodb\nconnection_string: 'mongodb://u:secret@h1,h2/?replicaSet=a'\n\
                    replica_set: rs0\nauth_source: admin\nssl_enabled: true\n\
                    read_preference: secondaryPreferred\nconnection_pool_size: 7\n\
                    connection_pool_max_idle_time: 30\n";
        let source = source_config(yaml);
        let mut options = ClientOptions::parse("mongodb://u:secret@h1,h2/?replicaSet=a")
            .await
            .unwrap();
        apply(&source, &mut options, 3);
        assert_eq!(options.repl_set_name.as_deref(), Some("rs0"));
        assert_eq!(options.credential.unwrap().source.as_deref(), Some("admin"));
        assert!(matches!(options.tls, Some(Tls::Enabled(_))));
        assert!(matches!(
            options.selection_criteria,
            Some(SelectionCriteria::ReadPreference(
                ReadPreference::SecondaryPreferred { .. }
            ))
        ));
        assert_eq!(options.max_pool_size, Some(7));
        assert_eq!(options.max_idle_time, Some(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn the_pool_fits_what_the_schema_runs_at_once_unless_sized() {
        let keys = source_config("type: mongodb\nconnection_string: 'mongodb://h/'\n");
        let pool = |uri: &'static str, floor: u32| {
            let keys = &keys;
            async move {
                let mut options = ClientOptions::parse(uri).await.unwrap();
                apply(keys, &mut options, floor);
                options.max_pool_size
            }
        };
        assert_eq!(pool("mongodb://h/", 18).await, Some(18));
        assert_eq!(pool("mongodb://h/", 6).await, Some(DRIVER_POOL_SIZE));
        assert_eq!(
            pool("mongodb://h/?maxPoolSize=5", 18).await,
            Some(5),
            "the URI's"
        );
    }

    #[tokio::test]
    async fn ssl_enabled_keeps_the_tls_options_of_the_uri() {
        let uri =
            "mongodb://h/?tls=true&tlsCAFile=/etc/ca/ca.pem&tlsCertificateKeyFile=/etc/ca/me.pem";
        let source = source_config(&format!(
            "type: mongodb\nconnection_string: '{uri}'\nssl_enabled: true\n"
        ));
        let mut options = ClientOptions::parse(uri).await.unwrap();
        apply(&source, &mut options, 3);
        let Some(Tls::Enabled(tls)) = &options.tls else {
            panic!("TLS is off: {:?}", options.tls);
        };
        assert_eq!(
            tls.ca_file_path.as_deref(),
            Some(std::path::Path::new("/etc/ca/ca.pem"))
        );
        assert_eq!(
            tls.cert_key_file_path.as_deref(),
            Some(std::path::Path::new("/etc/ca/me.pem"))
        );
        assert_eq!(
            security(&options).verification,
            Verification::Full {
                server_name: "h:27017".into()
            }
        );

        // The seed's `ssl=true` is TLS too; `ssl_enabled: false` turns any of it off.
        let seed = "mongodb://a:b@h:27017/db?ssl=true&authSource=admin&replicaSet=rs0";
        let mut options = ClientOptions::parse(seed).await.unwrap();
        apply(&source, &mut options, 3);
        assert!(matches!(options.tls, Some(Tls::Enabled(_))));
        // A CA bundle named by SSL_CERT_FILE serves where the URI names none, and never
        // replaces the URI's own.
        trust_platform_ca_file(&mut options, Some("/etc/ssl/private-ca.pem".into()));
        let Some(Tls::Enabled(tls)) = &options.tls else {
            panic!("TLS is off");
        };
        assert_eq!(
            tls.ca_file_path.as_deref(),
            Some(std::path::Path::new("/etc/ssl/private-ca.pem"))
        );
        let mut with_ca = ClientOptions::parse(uri).await.unwrap();
        trust_platform_ca_file(&mut with_ca, Some("/etc/ssl/private-ca.pem".into()));
        let Some(Tls::Enabled(tls)) = &with_ca.tls else {
            panic!("TLS is off");
        };
        assert_eq!(
            tls.ca_file_path.as_deref(),
            Some(std::path::Path::new("/etc/ca/ca.pem"))
        );
        let off =
            source_config("type: mongodb\nconnection_string: 'mongodb://h/'\nssl_enabled: false\n");
        apply(&off, &mut options, 3);
        assert!(matches!(options.tls, Some(Tls::Disabled)));
    }

    /// The connector's options, through the real config loader.
    fn source_config(source_yaml: &str) -> MongoOptions {
        use warp_core::config::{load_str, ConfigOverrides, Environment};
        let indented: String = source_yaml.lines().map(|l| format!("  {l}\n")).collect();
        let yaml = format!(
            "source:\n{indented}destination: {{ type: postgresql, connection_string: 'postgresql://u@h/d' }}\n\
             schemas:\n- name: s\n  tables: {{ c: {{}} }}\n"
        );
        load_str(
            &yaml,
            "test",
            &Environment::new(),
            &ConfigOverrides::default(),
        )
        .unwrap()
        .config
        .source
        .connector_or_error()
        .unwrap()
    }
}
