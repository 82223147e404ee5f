//! Each connector's own keys of the `source` section, as the process that composes the
//! connectors loads them: read by the connector `type` names, refused there when unknown,
//! documented, and settable by a variable.
#![cfg(all(feature = "mongodb", feature = "mysql", feature = "bigquery"))]

use std::path::PathBuf;

use warp_core::config::{
    load_str_with, ConfigErrors, ConfigOverrides, ConnectorConfig, Environment, LoadedConfig,
    SourceType,
};
use warp_server::connectors::{check_source_keys, load_config, source_keys};
use warp_source_bigquery::BigQueryOptions;
use warp_source_mongodb::MongoOptions;
use warp_source_mysql::{MysqlOptions, MysqlSslMode};

const PASSWORD: &str = "hunter2-secret";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env(vars: &[(&str, &str)]) -> Environment {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(yaml: &str, env: &Environment) -> Result<LoadedConfig, ConfigErrors> {
    load_str_with(
        yaml,
        "test.yaml",
        env,
        &ConfigOverrides::default(),
        check_source_keys,
    )
}

/// A config whose `source` is `{ type: <ty>, <keys> }`.
fn with_source(ty: &str, keys: &str) -> String {
    format!(
        "source: {{ type: {ty}, {keys} }}\n\
         destination: {{ type: postgresql, connection_string: 'postgresql://u@h/d' }}\n\
         schemas: [ {{ name: shop, change_detection_column: updated_at }} ]\n"
    )
}

fn mysql(keys: &str) -> String {
    with_source(
        "mysql",
        &format!("connection_string: 'mysql://repl:{PASSWORD}@db/shop', {keys}"),
    )
}

/// The error's text, checked to hold no password.
fn error_of(yaml: &str, env: &Environment) -> String {
    let err = load(yaml, env).expect_err("config must be rejected");
    let text = err.to_string();
    assert!(!text.contains(PASSWORD), "password leaked: {text}");
    text
}

fn mysql_options(yaml: &str, env: &Environment) -> MysqlOptions {
    load(yaml, env)
        .expect("loads")
        .config
        .source
        .connector_or_error()
        .unwrap()
}

#[test]
fn seed_configmap_without_secrets_names_both_missing_keys() {
    let err = load_config(
        &repo().join("examples/seed-ecommerce.yaml"),
        &Environment::new(),
        &ConfigOverrides::default(),
    )
    .unwrap_err();
    let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        ["source.connection_string", "destination.connection_string"]
    );
    assert!(err
        .to_string()
        .contains("CARTRIDGE_WARP_SOURCE__CONNECTION_STRING"));
}

#[test]
fn a_key_the_connector_does_not_know_is_refused_with_its_path() {
    let typo = env(&[("CARTRIDGE_WARP_SOURCE__CONECTION_STRING", "x")]);
    let text = error_of(&mysql("server_id: 7"), &typo);
    assert!(
        text.contains(
            "source.conection_string: unknown key for a mysql source (did you mean `connection_string`?)"
        ),
        "{text}"
    );
    assert!(
        text.contains("set by environment variable CARTRIDGE_WARP_SOURCE__CONECTION_STRING"),
        "{text}"
    );
    // Another connector's key does nothing here, so it is refused, not ignored.
    let text = error_of(&mysql("replica_set: rs0"), &Environment::new());
    assert!(
        text.contains("source.replica_set: unknown key for a mysql source"),
        "{text}"
    );
    let text = error_of(
        &with_source(
            "mongodb",
            "connection_string: 'mongodb://h/db', ssl_ca: /ca.pem",
        ),
        &Environment::new(),
    );
    assert!(
        text.contains("source.ssl_ca") && text.contains("tlsCAFile"),
        "{text}"
    );
    let text = error_of(
        &with_source("bigquery", "project_id: p, server_id: 3"),
        &Environment::new(),
    );
    assert!(
        text.contains("source.server_id: unknown key for a bigquery source"),
        "{text}"
    );
}

#[test]
fn connector_keys_are_typed_and_set_by_variables_too() {
    let set = env(&[("CARTRIDGE_WARP_SOURCE__SERVER_ID", "77")]);
    assert_eq!(
        mysql_options(&mysql("ssl_mode: required"), &set).server_id,
        Some(77)
    );
    let bad = env(&[("CARTRIDGE_WARP_SOURCE__SERVER_ID", "many")]);
    let text = error_of(&mysql("ssl_mode: required"), &bad);
    assert!(
        text.contains("source.server_id") && text.contains("CARTRIDGE_WARP_SOURCE__SERVER_ID"),
        "{text}"
    );
    let text = error_of(
        &with_source(
            "mongodb",
            "connection_string: 'mongodb://h/db', read_preference: closest",
        ),
        &Environment::new(),
    );
    assert!(
        text.contains("source.read_preference") && text.contains("nearest"),
        "{text}"
    );
    let text = error_of(&with_source("bigquery", "database: d"), &Environment::new());
    assert!(
        text.contains("source.project_id: required key is missing"),
        "{text}"
    );
    let text = error_of(
        &with_source("bigquery", "project_id: p, ssl_enabled: false"),
        &Environment::new(),
    );
    assert!(text.contains("always reached over HTTPS"), "{text}");
    let text = error_of(&with_source("mongodb", "database: d"), &Environment::new());
    assert!(text.contains("source.connection_string"), "{text}");
}

#[test]
fn mysql_tls_keys_are_checked_against_each_other() {
    let none = Environment::new();
    let mode = |keys: &str| mysql_options(&mysql(keys), &none).ssl_mode();
    assert_eq!(
        mode("ssl_enabled: true, ssl_ca: /etc/ca.pem"),
        MysqlSslMode::VerifyIdentity
    );
    assert_eq!(mode("ssl_mode: VERIFY_CA"), MysqlSslMode::VerifyCa);
    assert_eq!(mode("server_id: 7"), MysqlSslMode::Preferred);

    let text = error_of(&mysql("ssl_enabled: true, ssl_mode: required"), &none);
    assert!(
        text.contains("source.ssl_mode") && text.contains("contradicts"),
        "{text}"
    );
    let text = error_of(&mysql("ssl_cert: /c.pem"), &none);
    assert!(text.contains("source.ssl_key"), "{text}");
    let text = error_of(&mysql("ssl_mode: disabled, ssl_ca: /ca.pem"), &none);
    assert!(
        text.contains("source.ssl_ca") && text.contains("no effect"),
        "{text}"
    );
    let text = error_of(&mysql("ssl_mode: verify_everything"), &none);
    assert!(text.contains("verify_identity"), "{text}");
}

/// Each connector's keys: every one documented in its section of docs/configuration.md
/// and listed for `env-help` with its variable, and nothing listed that it refuses.
#[test]
fn every_connector_key_is_documented_and_listed() {
    let accepted_by = |ty: SourceType| match ty {
        SourceType::Mysql => warp_core::testing::accepted_keys::<MysqlOptions>(),
        SourceType::Mongodb => warp_core::testing::accepted_keys::<MongoOptions>(),
        SourceType::Bigquery => warp_core::testing::accepted_keys::<BigQueryOptions>(),
    };
    let built_in = source_keys();
    assert_eq!(built_in.len(), 3, "every connector is built in by default");
    for (ty, keys) in built_in {
        let doc =
            warp_core::testing::documented_section(&repo(), &format!("`source`: {}", ty.as_str()));
        let mut listed: Vec<String> = keys
            .iter()
            .map(|k| k.path.strip_prefix("source.").unwrap().to_owned())
            .collect();
        let mut accepted = accepted_by(ty);
        for key in &accepted {
            assert!(
                doc.contains(&format!("`{key}`")),
                "{}: `{key}` is accepted but not documented",
                ty.as_str()
            );
        }
        listed.sort();
        accepted.sort();
        assert_eq!(
            listed,
            accepted,
            "{}: env-help lists what is accepted",
            ty.as_str()
        );
    }
    assert_eq!(
        <MysqlOptions as ConnectorConfig>::KEYS[0].variable(),
        "CARTRIDGE_WARP_SOURCE__SERVER_ID"
    );
}
