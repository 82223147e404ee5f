//! Configuration loading: the seed ConfigMap, every shipped example, each bad-input case,
//! environment precedence and the seed's plain variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use warp_core::config::{
    load_file, load_str, ConfigErrors, ConfigOverrides, DeletionStrategy, Environment, LogLevel,
    Mode, SourceType,
};

const PASSWORD: &str = "hunter2-secret";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env(pairs: &[(&str, &str)]) -> Environment {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The two connection-string variables of the seed Deployment (from its Secret).
fn seed_env() -> Environment {
    env(&[
        (
            "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING",
            "mongodb://admin:hunter2-secret@mongodb.example.com:27017/ecommerce_db?ssl=true&authSource=admin&replicaSet=rs0",
        ),
        (
            "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING",
            "postgresql://warp_user:hunter2-secret@postgres.example.com:5432/warehouse?sslmode=require&connect_timeout=30",
        ),
    ])
}

fn load(yaml: &str, env: &Environment) -> Result<warp_core::config::LoadedConfig, ConfigErrors> {
    load_str(yaml, "test.yaml", env, &ConfigOverrides::default())
}

/// Loads and returns the single error's text, asserting no password leaked.
fn error_of(yaml: &str, env: &Environment) -> String {
    let err = load(yaml, env).expect_err("config must be rejected");
    let text = err.to_string();
    assert!(!text.contains(PASSWORD), "password leaked: {text}");
    assert!(
        !format!("{err:?}").contains(PASSWORD),
        "password leaked in Debug"
    );
    text
}

const MINIMAL: &str = "
source:
  type: mysql
  connection_string: mysql://repl:hunter2-secret@db:3306/shop
destination:
  type: postgresql
  connection_string: postgresql://warp:hunter2-secret@pg/dw
schemas:
- name: shop
";

#[test]
fn seed_configmap_is_our_example_verbatim() {
    let seed = repo().join("../shared/seed/kubernetes-deployment.md");
    let Ok(doc) = std::fs::read_to_string(&seed) else {
        eprintln!(
            "{} not present; comparing skipped, example still tested below",
            seed.display()
        );
        return;
    };
    let start = doc
        .find("  config.yaml: |\n")
        .expect("seed has the ConfigMap")
        + "  config.yaml: |\n".len();
    let end = doc[start..].find("\n---\n").expect("ConfigMap ends") + start;
    let dedented: String = doc[start..end]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n");
    let ours = std::fs::read_to_string(repo().join("examples/seed-ecommerce.yaml")).unwrap();
    assert_eq!(dedented.trim_end(), ours.trim_end());
}

#[test]
fn seed_configmap_loads_with_the_two_secret_variables() {
    let path = repo().join("examples/seed-ecommerce.yaml");
    let loaded = load_file(&path, &seed_env(), &ConfigOverrides::default()).unwrap();
    let cfg = &loaded.config;
    assert_eq!(cfg.mode, Mode::Single);
    assert_eq!(cfg.source.source_type, SourceType::Mongodb);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    let schemas = cfg.schemas_to_run(None);
    assert_eq!(schemas.len(), 1);
    let s = &schemas[0];
    assert_eq!(
        (s.name.as_str(), s.destination_schema.as_str()),
        ("ecommerce", "ecommerce")
    );
    assert_eq!(s.source_database, "ecommerce_db");
    assert_eq!(s.max_parallel_streams, 3);
    assert!(s.filter.includes("reviews") && !s.filter.includes("sessions"));

    let orders = s.table("orders");
    assert_eq!((orders.batch_size, orders.parallel_streams), (1000, 2));
    assert_eq!(orders.polling_interval, Duration::from_secs(5));
    assert!(!s.table("products").full_load_enabled);
    assert!(!s.table("reviews").full_load_enabled);
    assert!(s.table("users").full_load_enabled);
    // Not listed: falls back to performance.write_batch_size.
    assert_eq!(s.table("other").batch_size, 500);
    assert_eq!(s.table("other").deletion_strategy, DeletionStrategy::Soft);
}

#[test]
fn every_shipped_example_parses() {
    let mut env = seed_env();
    env.insert(
        "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING".into(),
        "mysql://u:p@h/db".into(),
    );
    let mut seen = 0;
    let top = repo().join("examples");
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(&top).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            paths.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            paths.push(path);
        }
    }
    for path in paths {
        if path.extension().is_some_and(|e| e == "yaml") {
            let loaded = load_file(&path, &env, &ConfigOverrides::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                !loaded.config.schemas_to_run(None).is_empty(),
                "{}",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 5,
        "examples found: {seen} (the demo's config included)"
    );
    let starter = warp_core::config::starter_config();
    load(starter, &Environment::new()).expect("init's starter config loads");
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    let text = error_of(
        "source:\n  type: mysql\n   bad: [unclosed\n",
        &Environment::new(),
    );
    assert!(text.contains("malformed YAML"), "{text}");
    assert!(text.contains("line 3"), "{text}");
    assert!(text.contains("column"), "{text}");
}

#[test]
fn unknown_key_names_path_and_suggests() {
    let yaml = format!("{MINIMAL}  tables:\n    orders:\n      batch_sise: 10\n");
    let text = error_of(&yaml, &Environment::new());
    assert!(
        text.contains("schemas[0].tables.orders.batch_sise: unknown key"),
        "{text}"
    );
    assert!(text.contains("did you mean `batch_size`?"), "{text}");

    let text = error_of(
        &format!("{MINIMAL}monitoring:\n  metrics_prot: 9000\n"),
        &Environment::new(),
    );
    assert!(
        text.contains("monitoring.metrics_prot: unknown key (did you mean `metrics_port`?)"),
        "{text}"
    );
}

#[test]
fn wrong_type_names_path() {
    let text = error_of(
        &format!("{MINIMAL}performance:\n  max_retries: lots\n"),
        &Environment::new(),
    );
    assert!(text.contains("performance.max_retries:"), "{text}");
    // Values that look like secrets are masked even when echoed back.
    let yaml = format!("{MINIMAL}performance:\n  max_retries: 'mysql://u:{PASSWORD}@h/x'\n");
    let text = error_of(&yaml, &Environment::new());
    assert!(text.contains("performance.max_retries:"), "{text}");
}

#[test]
fn missing_required_key_names_path() {
    let text = error_of(
        "source:\n  connection_string: x\ndestination:\n  type: postgresql\n",
        &Environment::new(),
    );
    assert!(
        text.contains("source.type: required key is missing"),
        "{text}"
    );
    let text = error_of("destination:\n  type: postgresql\n", &Environment::new());
    assert!(text.contains("source: required key is missing"), "{text}");
}

#[test]
fn invalid_enum_value_lists_choices_and_suggests() {
    let yaml = MINIMAL.replace("type: mysql", "type: mongo");
    let text = error_of(&yaml, &Environment::new());
    assert!(
        text.contains("source.type: invalid value `mongo`"),
        "{text}"
    );
    assert!(text.contains("mongodb, mysql, bigquery"), "{text}");
    assert!(text.contains("did you mean `mongodb`?"), "{text}");

    let text = error_of(
        &format!("{MINIMAL}  deletion_strategy: sofft\n"),
        &Environment::new(),
    );
    assert!(
        text.contains("schemas[0].deletion_strategy: invalid value `sofft`"),
        "{text}"
    );
}

#[test]
fn non_positive_batch_size_is_rejected() {
    let yaml = format!("{MINIMAL}  tables:\n    orders:\n      batch_size: 0\n");
    let text = error_of(&yaml, &Environment::new());
    assert!(
        text.contains("schemas[0].tables.orders.batch_size: expected a positive integer"),
        "{text}"
    );
    let yaml = format!("{MINIMAL}performance:\n  write_batch_size: -5\n");
    let text = error_of(&yaml, &Environment::new());
    assert!(
        text.contains("performance.write_batch_size: expected a positive integer, got -5"),
        "{text}"
    );
}

#[test]
fn semantic_errors_name_paths() {
    let yaml = MINIMAL.replace(
        "type: mysql",
        "type: mysql\n  change_detection_strategy: change_stream",
    );
    let text = error_of(&yaml, &Environment::new());
    assert!(
        text.contains(
            "source.change_detection_strategy: `change_stream` is not available for a mysql source"
        ),
        "{text}"
    );

    let yaml = format!("{MINIMAL}single_schema_name: shpo\n");
    let text = error_of(&yaml, &Environment::new());
    assert!(
        text.contains(
            "single_schema_name: schema `shpo` is not among `schemas` (shop); did you mean `shop`?"
        ),
        "{text}"
    );

    let yaml = format!("{MINIMAL}monitoring:\n  health_check_port: 8080\n");
    assert!(
        error_of(&yaml, &Environment::new()).contains("monitoring.health_check_port: must differ")
    );

    let yaml = MINIMAL.replace(
        "type: mysql",
        "type: mysql\n  change_detection_strategy: timestamp",
    );
    assert!(
        error_of(&yaml, &Environment::new()).contains("source.change_detection_column: required")
    );

    // A zone we would not apply to anything is refused, not silently ignored.
    let yaml = MINIMAL.replace("type: mysql", "type: mysql\n  timezone: Europe/Berlin");
    let text = error_of(&yaml, &Environment::new());
    assert!(
        text.contains("source.timezone: `Europe/Berlin`: only UTC is supported"),
        "{text}"
    );
    let yaml = MINIMAL.replace("type: mysql", "type: mysql\n  timezone: UTC");
    assert!(load(&yaml, &Environment::new()).is_ok());
    let yaml = format!("{MINIMAL}logging:\n  masked_columns: [email]\n");
    let text = error_of(&yaml, &Environment::new());
    assert!(
        text.contains("logging.masked_columns: not supported, and not needed"),
        "{text}"
    );
}

/// The soft-delete columns' names are configurable at every level; the table's own wins,
/// and names that cannot work are refused with their path.
#[test]
fn soft_delete_column_names_resolve_per_table_and_bad_ones_name_their_path() {
    let yaml = MINIMAL
        .replace(
            "connection_string: postgresql://warp:hunter2-secret@pg/dw",
            "connection_string: postgresql://warp:hunter2-secret@pg/dw\n  soft_delete_column: gone",
        )
        .replace(
            "- name: shop",
            "- name: shop\n  tables:\n    posts: { soft_delete_column: _gone, deleted_at_column: _gone_at }",
        );
    let loaded = load(&yaml, &Environment::new()).unwrap();
    let schema = loaded.config.schemas_to_run(None).remove(0);
    let posts = schema.table("posts");
    assert_eq!(
        (
            posts.soft_delete_column.as_str(),
            posts.deleted_at_column.as_str()
        ),
        ("_gone", "_gone_at")
    );
    let orders = schema.table("orders");
    assert_eq!(
        (
            orders.soft_delete_column.as_str(),
            orders.deleted_at_column.as_str()
        ),
        ("gone", "deleted_at")
    );
    let defaults = load(MINIMAL, &Environment::new()).unwrap();
    let t = defaults.config.schemas_to_run(None).remove(0).table("t");
    assert_eq!(
        (t.soft_delete_column.as_str(), t.deleted_at_column.as_str()),
        ("is_deleted", "deleted_at")
    );

    let yaml = MINIMAL.replace(
        "- name: shop",
        "- name: shop\n  tables:\n    posts: { soft_delete_column: x, deleted_at_column: x }",
    );
    let text = error_of(&yaml, &Environment::new());
    assert!(
        text.contains(
            "schemas[0].tables.posts.deleted_at_column: must differ from soft_delete_column"
        ),
        "{text}"
    );
    let yaml = MINIMAL.replace(
        "connection_string: postgresql://warp:hunter2-secret@pg/dw",
        "connection_string: postgresql://warp:hunter2-secret@pg/dw\n  soft_delete_column: _cartridge_op",
    );
    let text = error_of(&yaml, &Environment::new());
    assert!(
        text.contains("destination.soft_delete_column: names starting with _cartridge_"),
        "{text}"
    );
}

#[test]
fn debug_output_masks_passwords() {
    let loaded = load(MINIMAL, &Environment::new()).unwrap();
    let dump = format!("{:?}", loaded.config);
    assert!(!dump.contains(PASSWORD), "{dump}");
    assert!(dump.contains("repl:***@db"), "{dump}");
}

#[test]
fn environment_overrides_file_and_flags_override_environment() {
    let yaml = format!("{MINIMAL}performance:\n  write_batch_size: 100\n- name: other\n");
    let yaml = yaml.replace(
        "- name: shop\nperformance",
        "- name: shop\n- name: other\nperformance",
    );
    let yaml = yaml.trim_end_matches("- name: other\n").to_owned() + "\nsingle_schema_name: shop\n";
    let file_only = load(&yaml, &Environment::new()).unwrap();
    assert_eq!(
        file_only.config.performance.write_batch_size.unwrap().get(),
        100
    );

    let e = env(&[
        ("CARTRIDGE_WARP_PERFORMANCE__WRITE_BATCH_SIZE", "250"),
        ("CARTRIDGE_WARP_MODE", "multi"),
        (
            "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING",
            "mysql://env:pw@envhost/shop",
        ),
        ("CARTRIDGE_WARP_DESTINATION__SCHEMA", "landing"),
        ("UNRELATED", "x"),
    ]);
    let with_env = load(&yaml, &e).unwrap();
    let cfg = &with_env.config;
    assert_eq!(cfg.performance.write_batch_size.unwrap().get(), 250);
    assert_eq!(cfg.mode, Mode::Multi);
    assert_eq!(
        cfg.source.connection_string.as_ref().unwrap().expose(),
        "mysql://env:pw@envhost/shop"
    );
    assert_eq!(cfg.destination.schema.as_deref(), Some("landing"));

    // Flags beat the environment: the seed Deployment passes --mode=single --schema=...
    let flags = ConfigOverrides {
        mode: Some(Mode::Single),
        schema: Some("other".into()),
    };
    let with_flags = load_str(&yaml, "test.yaml", &e, &flags).unwrap();
    assert_eq!(with_flags.config.mode, Mode::Single);
    let run = with_flags
        .config
        .schemas_to_run(with_flags.schema_selection.as_deref());
    assert_eq!(run.len(), 1);
    assert_eq!(run[0].name, "other");
    assert_eq!(run[0].destination_schema, "landing");
}

#[test]
fn multi_mode_schema_flag_selects_one_schema() {
    let yaml = format!("{MINIMAL}- name: other\nmode: multi\n");
    let all = load(&yaml, &Environment::new()).unwrap();
    let names: Vec<_> = all
        .config
        .schemas_to_run(None)
        .into_iter()
        .map(|s| s.destination_schema)
        .collect();
    assert_eq!(names, ["shop", "other"]);
    let one = load_str(
        &yaml,
        "t",
        &Environment::new(),
        &ConfigOverrides {
            mode: None,
            schema: Some("other".into()),
        },
    )
    .unwrap();
    let run = one.config.schemas_to_run(one.schema_selection.as_deref());
    assert_eq!(run.len(), 1);
    let bad = load_str(
        &yaml,
        "t",
        &Environment::new(),
        &ConfigOverrides {
            mode: None,
            schema: Some("nope".into()),
        },
    );
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("--schema: schema `nope` is not among"));
}

#[test]
fn bad_environment_values_name_the_variable() {
    let e = env(&[("CARTRIDGE_WARP_PERFORMANCE__MAX_RETRIES", "many")]);
    let text = error_of(MINIMAL, &e);
    assert!(text.contains("performance.max_retries"), "{text}");
    assert!(
        text.contains("CARTRIDGE_WARP_PERFORMANCE__MAX_RETRIES"),
        "{text}"
    );
}

#[test]
fn seed_plain_variables_are_honoured() {
    let e = env(&[
        ("PROMETHEUS_METRICS_ENABLED", "false"),
        ("PROMETHEUS_METRICS_PORT", "9102"),
        ("LOG_LEVEL", "DEBUG"),
        ("POD_NAME", "cartridge-warp-ecommerce-7d9f-abcde"),
        ("POD_NAMESPACE", "cartridge-warp"),
    ]);
    let loaded = load(MINIMAL, &e).unwrap();
    let m = &loaded.config.monitoring;
    assert!(!m.metrics_enabled);
    assert_eq!(m.metrics_port, 9102);
    assert_eq!(loaded.config.logging.level, LogLevel::Debug);
    assert_eq!(
        loaded.identity.pod_name.as_deref(),
        Some("cartridge-warp-ecommerce-7d9f-abcde")
    );
    assert_eq!(
        loaded.identity.pod_namespace.as_deref(),
        Some("cartridge-warp")
    );

    // The prefixed variable is more specific and wins over the plain one.
    let mut e2 = e.clone();
    e2.insert(
        "CARTRIDGE_WARP_MONITORING__METRICS_PORT".into(),
        "9200".into(),
    );
    assert_eq!(
        load(MINIMAL, &e2).unwrap().config.monitoring.metrics_port,
        9200
    );
    // And the plain one wins over the file.
    let yaml = format!("{MINIMAL}monitoring:\n  metrics_port: 7000\n");
    assert_eq!(
        load(&yaml, &e).unwrap().config.monitoring.metrics_port,
        9102
    );
}

#[test]
fn table_settings_resolve_table_then_schema_then_global() {
    let yaml = "
performance: { write_batch_size: 700, polling_interval: 9 }
source: { type: mysql, connection_string: 'mysql://u@h/db' }
destination: { type: postgresql, connection_string: 'postgresql://u@h/d', deletion_strategy: hard }
schemas:
- name: shop
  batch_size: 300
  deletion_strategy: soft
  tables:
    orders: { batch_size: 50, polling_interval: 1 }
";
    let s = load(yaml, &Environment::new())
        .unwrap()
        .config
        .schemas_to_run(None)
        .remove(0);
    let orders = s.table("orders");
    assert_eq!(orders.batch_size, 50);
    assert_eq!(orders.polling_interval, Duration::from_secs(1));
    assert_eq!(orders.deletion_strategy, DeletionStrategy::Soft);
    let other = s.table("other");
    assert_eq!(other.batch_size, 300, "schema level");
    assert_eq!(
        other.polling_interval,
        Duration::from_secs(9),
        "performance level"
    );
    // Built in: one chunk per core (at most 4), within the destination pool's share.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(
        other.parallel_streams,
        cores.clamp(1, 4).min(10 / 4),
        "built-in default"
    );
}

#[test]
fn tables_accept_list_and_mapping_forms() {
    let map = format!("{MINIMAL}  tables:\n    orders: {{ batch_size: 5 }}\n");
    let list = format!("{MINIMAL}  tables:\n  - name: orders\n    batch_size: 5\n");
    for yaml in [map, list] {
        let s = load(&yaml, &Environment::new())
            .unwrap()
            .config
            .schemas_to_run(None)
            .remove(0);
        assert_eq!(s.table("orders").batch_size, 5);
    }
    let text = error_of(
        &format!("{MINIMAL}  tables:\n  - batch_size: 5\n"),
        &Environment::new(),
    );
    assert!(
        text.contains("schemas[0].tables[0].name: required key is missing"),
        "{text}"
    );
}

/// A file holding `content`, as a Kubernetes Secret volume mounts one.
fn secret_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warp-config-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn secrets_are_read_from_files_named_by_file_variables() {
    let source = secret_file(
        "source",
        "mysql://repl:hunter2-secret@db.internal:3306/shop\n",
    );
    let destination = secret_file(
        "destination",
        "postgresql://warp:hunter2-secret@pg/dw?sslmode=require",
    );
    let yaml =
        "source: { type: mysql }\ndestination: { type: postgresql }\nschemas: [ { name: shop } ]\n";
    let loaded = load(
        yaml,
        &env(&[
            (
                "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING_FILE",
                source.to_str().unwrap(),
            ),
            (
                "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING_FILE",
                destination.to_str().unwrap(),
            ),
        ]),
    )
    .expect("loads");
    // The trailing line break of the file is not part of the secret.
    assert_eq!(
        loaded.config.source.connection_string.unwrap().expose(),
        "mysql://repl:hunter2-secret@db.internal:3306/shop"
    );
    assert_eq!(
        loaded
            .config
            .destination
            .connection_string
            .unwrap()
            .expose(),
        "postgresql://warp:hunter2-secret@pg/dw?sslmode=require"
    );
}

#[test]
fn file_variables_that_cannot_be_used_name_the_variable_and_never_the_secret() {
    let yaml = "source: { type: mysql }\ndestination: { type: postgresql, connection_string: 'postgresql://u@h/d' }\nschemas: [ { name: shop } ]\n";
    let text = error_of(
        yaml,
        &env(&[(
            "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING_FILE",
            "/nonexistent/secret",
        )]),
    );
    assert!(text.contains("source.connection_string"), "{text}");
    assert!(text.contains("/nonexistent/secret"), "{text}");
    assert!(
        text.contains("CARTRIDGE_WARP_SOURCE__CONNECTION_STRING_FILE"),
        "{text}"
    );

    let file = secret_file("both", "mysql://repl:hunter2-secret@db/shop");
    let text = error_of(
        yaml,
        &env(&[
            (
                "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING_FILE",
                file.to_str().unwrap(),
            ),
            (
                "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING",
                "mysql://repl:hunter2-secret@db/shop",
            ),
        ]),
    );
    assert!(text.contains("keep one"), "{text}");

    let empty = secret_file("empty", "\n");
    let text = error_of(
        yaml,
        &env(&[(
            "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING_FILE",
            empty.to_str().unwrap(),
        )]),
    );
    assert!(text.contains("is empty"), "{text}");
}

/// The `source` keys warp-core reads are the shared ones; every other key is kept for the
/// connector (warp-server's tests check each connector's keys).
#[test]
fn connector_keys_are_left_to_the_connector() {
    let yaml = "source: { type: mysql, connection_string: 'mysql://u@db/shop', server_id: 7, \
                anything_at_all: { nested: 1 } }\n\
                destination: { type: postgresql, connection_string: 'postgresql://u@h/d' }\n\
                schemas: [ { name: shop } ]\n";
    let loaded = load(yaml, &Environment::new()).expect("loads");
    let source = &loaded.config.source;
    let mut keys: Vec<&str> = source.options.keys().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["anything_at_all", "server_id"]);
    // Every field of SourceConfig is a shared key: adding one without listing it breaks
    // this destructuring (and the list is what the docs test reads).
    let warp_core::config::SourceConfig {
        source_type: _,
        connection_string: _,
        database: _,
        change_detection_strategy: _,
        change_detection_column: _,
        timezone: _,
        options: _,
    } = source;
    for key in warp_core::config::SHARED_SOURCE_KEYS {
        let yaml = format!(
            "source: {{ type: mysql, connection_string: 'mysql://u@db/shop', {key}: UTC }}\n\
             destination: {{ type: postgresql, connection_string: 'postgresql://u@h/d' }}\n\
             schemas: [ {{ name: shop, change_detection_column: c }} ]\n"
        );
        if let Ok(loaded) = load(&yaml, &Environment::new()) {
            assert!(!loaded.config.source.options.contains(key), "{key}");
        }
    }
}

/// Every key the loader accepts is documented in its section of docs/configuration.md,
/// and every scalar key outside `schemas[]` can be set by a variable (`env-help`), so a
/// key added to the code without a word for users — or documented but never read —
/// fails here. (Which keys are read is checked key by key in the suites; this ties the
/// lists together.)
#[test]
fn every_accepted_key_is_documented_and_every_variable_is_accepted() {
    use warp_core::config::*;
    let sections: [(&str, Vec<String>); 9] = [
        (
            "Top level",
            warp_core::testing::accepted_keys::<WarpConfig>(),
        ),
        (
            "`performance`",
            warp_core::testing::accepted_keys::<PerformanceConfig>(),
        ),
        (
            "`source`",
            SHARED_SOURCE_KEYS.iter().map(|k| (*k).to_owned()).collect(),
        ),
        (
            "`destination`",
            warp_core::testing::accepted_keys::<DestinationConfig>(),
        ),
        (
            "`schemas[]`",
            warp_core::testing::accepted_keys::<SchemaConfig>(),
        ),
        (
            "Per-table keys",
            warp_core::testing::accepted_keys::<TableSettings>(),
        ),
        (
            "`monitoring`",
            warp_core::testing::accepted_keys::<MonitoringConfig>(),
        ),
        (
            "`logging`",
            warp_core::testing::accepted_keys::<LoggingConfig>(),
        ),
        (
            "`verification`",
            warp_core::testing::accepted_keys::<VerificationConfig>(),
        ),
    ];
    let sections_of_top = [
        "performance",
        "source",
        "destination",
        "schemas",
        "monitoring",
        "logging",
        "verification",
    ];
    let per_table = warp_core::testing::accepted_keys::<TableSettings>();
    let variables: Vec<&str> = env_keys().iter().map(|k| k.path).collect();
    for (heading, keys) in &sections {
        assert!(keys.len() > 2, "{heading}: {keys:?}");
        let doc = warp_core::testing::documented_section(&repo(), heading);
        for key in keys {
            if *heading == "Top level" && sections_of_top.contains(&key.as_str()) {
                continue;
            }
            // Per-table keys at schema level are documented once, with the tables.
            if *heading == "`schemas[]`" && per_table.contains(key) {
                continue;
            }
            assert!(
                doc.contains(&format!("`{key}`")),
                "{heading}: `{key}` is accepted but not documented in docs/configuration.md"
            );
        }
        let prefix = match *heading {
            "Top level" => "",
            "`performance`" => "performance.",
            "`source`" => "source.",
            "`destination`" => "destination.",
            "`monitoring`" => "monitoring.",
            "`logging`" => "logging.",
            "`verification`" => "verification.",
            _ => continue,
        };
        for key in keys {
            let path = format!("{prefix}{key}");
            let scalar_free = ["schemas", "masked_columns"];
            if sections_of_top.contains(&key.as_str()) && prefix.is_empty()
                || scalar_free.contains(&key.as_str()) && !variables.contains(&path.as_str())
            {
                continue;
            }
            assert!(
                variables.contains(&path.as_str()),
                "`{path}` is accepted but no CARTRIDGE_WARP_ variable sets it (keys.rs)"
            );
        }
    }
    // And the other way: every variable names a key the loader accepts.
    for path in variables {
        let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
        let heading = match section {
            "" => "Top level".to_owned(),
            s => format!("`{s}`"),
        };
        let keys = &sections.iter().find(|(h, _)| *h == heading).unwrap().1;
        assert!(
            keys.iter().any(|k| k == key),
            "{path}: a variable for a key the loader refuses"
        );
    }
}

#[test]
fn a_table_pattern_that_is_no_glob_names_its_entry() {
    let yaml = "source: { type: mysql, connection_string: 'mysql://u@db/shop' }\n\
                destination: { type: postgresql, connection_string: 'postgresql://u@h/d' }\n\
                schemas: [ { name: shop, table_whitelist: [orders, 'log_[2024'] } ]\n";
    let text = error_of(yaml, &Environment::new());
    assert!(
        text.contains("schemas[0].table_whitelist[1]: `log_[2024` is not a valid pattern"),
        "{text}"
    );
}

#[test]
fn snapshot_chunks_are_sized_by_row_width_unless_configured() {
    let loaded = load(MINIMAL, &env(&[])).unwrap();
    let t = loaded.config.schemas_to_run(None).remove(0).table("orders");
    assert_eq!(t.snapshot_chunk_size, None);
    // (estimated bytes per row) → rows per chunk.
    for (width, rows) in [
        (None, 50_000),          // no estimate: the default
        (Some(0), 50_000),       // an empty table's estimate
        (Some(200), 50_000),     // narrow rows: never more than the default
        (Some(1_342), 50_000),   // 64 MiB / 1,342 B
        (Some(20_000), 3_355),   // 64 MiB / 20 KB
        (Some(10 << 20), 1_000), // the floor
    ] {
        assert_eq!(t.chunk_rows(width), rows, "{width:?}");
    }

    let yaml = format!("{MINIMAL}  snapshot_chunk_size: 700\n");
    let loaded = load(&yaml, &env(&[])).unwrap();
    let t = loaded.config.schemas_to_run(None).remove(0).table("orders");
    assert_eq!(t.chunk_rows(Some(20_000)), 700, "a configured size wins");
}
