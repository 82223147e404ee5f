//! Loading: YAML file, then `CARTRIDGE_WARP_*` variables, then command-line flags
//! (flag > environment > file > default), through the `config` crate; deserialized with
//! key-path tracking so every error names where it is.

use std::collections::BTreeMap;
use std::path::Path;

use config::{ConfigError, File, FileFormat};

use super::errors::{closest, ConfigErrors, ConfigIssue};
use super::model::{Mode, SourceConfig, WarpConfig};
use super::validate::validate;

/// Environment variables as name → value (the CLI passes `std::env::vars()`; tests pass
/// their own map, so no test mutates the process environment).
pub type Environment = BTreeMap<String, String>;

pub const ENV_PREFIX: &str = "CARTRIDGE_WARP";

/// Keys holding secrets: each also reads from a file named by its variable plus
/// `_FILE` (a Kubernetes Secret volume), so the secret need not sit in the environment.
pub const SECRET_KEYS: &[&str] = &["source.connection_string", "destination.connection_string"];

/// Suffix of the variables that name a file holding a secret key's value.
pub const FILE_SUFFIX: &str = "_FILE";

/// The seed Deployment's plain variables and the key each one sets. A
/// `CARTRIDGE_WARP_*` variable for the same key wins over these.
pub(crate) const PLAIN_VAR_KEYS: &[(&str, &str)] = &[
    ("PROMETHEUS_METRICS_ENABLED", "monitoring.metrics_enabled"),
    ("PROMETHEUS_METRICS_PORT", "monitoring.metrics_port"),
    ("LOG_LEVEL", "logging.level"),
];

/// Command-line flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    pub mode: Option<Mode>,
    /// `--schema`: the schema to run (in single mode it replaces `single_schema_name`;
    /// in multi mode it narrows the run to that schema).
    pub schema: Option<String>,
}

/// Who this process is (from the seed's downward-API variables), for leases, server ids
/// and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeIdentity {
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

impl RuntimeIdentity {
    fn from_env(env: &Environment) -> Self {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        Self {
            pod_name: get("POD_NAME").or_else(|| get("HOSTNAME")),
            pod_namespace: get("POD_NAMESPACE"),
        }
    }
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: WarpConfig,
    /// Where it came from (file path), for messages.
    pub origin: String,
    /// In multi mode, `--schema` narrows the run to one schema.
    pub schema_selection: Option<String>,
    /// Things that are legal but probably not meant (printed by `validate`, logged by `run`).
    pub warnings: Vec<String>,
    pub identity: RuntimeIdentity,
}

/// Loads and validates the configuration file at `path`.
pub fn load_file(
    path: &Path,
    env: &Environment,
    overrides: &ConfigOverrides,
) -> Result<LoadedConfig, ConfigErrors> {
    load_file_with(path, env, overrides, |_, _| Vec::new())
}

fn read(path: &Path, origin: &str) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(
            origin,
            ConfigIssue::new("", format!("cannot read the file: {e}")),
        )
    })
}

/// Loads and validates a configuration given as YAML text. The connector's own `source`
/// keys are not checked here (see [`load_str_with`]).
pub fn load_str(
    yaml: &str,
    origin: &str,
    env: &Environment,
    overrides: &ConfigOverrides,
) -> Result<LoadedConfig, ConfigErrors> {
    load_str_with(yaml, origin, env, overrides, |_, _| Vec::new())
}

/// How the connector a `source.type` names checks its own keys (the process that
/// composes the connectors supplies it).
pub type SourceKeysCheck = fn(&SourceConfig, &Environment) -> Vec<ConfigIssue>;

/// [`load_file`], with the connector's keys checked by `source_keys` and reported with
/// every other issue.
pub fn load_file_with(
    path: &Path,
    env: &Environment,
    overrides: &ConfigOverrides,
    source_keys: SourceKeysCheck,
) -> Result<LoadedConfig, ConfigErrors> {
    let origin = path.display().to_string();
    let text = read(path, &origin)?;
    load_str_with(&text, &origin, env, overrides, source_keys)
}

/// [`load_str`], with the connector's keys checked by `source_keys`.
pub fn load_str_with(
    yaml: &str,
    origin: &str,
    env: &Environment,
    overrides: &ConfigOverrides,
    source_keys: SourceKeysCheck,
) -> Result<LoadedConfig, ConfigErrors> {
    let fail = |issue: ConfigIssue| ConfigErrors::single(origin, issue);
    let mut prefixed: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k[ENV_PREFIX.len()..].starts_with('_'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    secrets_from_files(&mut prefixed).map_err(|issues| ConfigErrors {
        origin: origin.to_owned(),
        issues,
    })?;
    let plain: config::Map<String, String> = PLAIN_VAR_KEYS
        .iter()
        .filter_map(|(var, key)| {
            let value = env.get(*var).filter(|v| !v.is_empty())?;
            Some((key.replace('.', "__").to_uppercase(), value.clone()))
        })
        .collect();

    let layered = config::Config::builder()
        .add_source(File::from_str(yaml, FileFormat::Yaml))
        .add_source(
            config::Environment::default()
                .separator("__")
                .ignore_empty(true)
                .source(Some(plain.into_iter().collect())),
        )
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .ignore_empty(true)
                .source(Some(prefixed.into_iter().collect())),
        )
        .build()
        .map_err(|e| fail(build_issue(&e)))?;

    let mut config: WarpConfig = serde_path_to_error::deserialize(layered)
        .map_err(|e| fail(deserialize_issue(&e, env, "", &[])))?;

    if let Some(mode) = overrides.mode {
        config.mode = mode;
    }
    let mut schema_selection = None;
    if let Some(schema) = &overrides.schema {
        match config.mode {
            Mode::Single => config.single_schema_name = Some(schema.clone()),
            Mode::Multi => schema_selection = Some(schema.clone()),
        }
    }

    let report = validate(&config, schema_selection.as_deref());
    let mut issues = source_keys(&config.source, env);
    issues.extend(report.errors);
    if !issues.is_empty() {
        return Err(ConfigErrors {
            origin: origin.to_owned(),
            issues,
        });
    }
    Ok(LoadedConfig {
        config,
        origin: origin.to_owned(),
        schema_selection,
        warnings: report.warnings,
        identity: RuntimeIdentity::from_env(env),
    })
}

/// Replaces each secret key's `…_FILE` variable by the variable itself, holding the
/// file's content (one trailing line break dropped, as `kubectl create secret
/// --from-file` keeps it). Setting both forms is refused: which one wins would be a guess.
fn secrets_from_files(vars: &mut BTreeMap<String, String>) -> Result<(), Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    for key in SECRET_KEYS {
        let var = super::keys::variable_of(key);
        let file_var = format!("{var}{FILE_SUFFIX}");
        let Some(path) = vars.remove(&file_var).filter(|p| !p.is_empty()) else {
            continue;
        };
        if vars.get(&var).is_some_and(|v| !v.is_empty()) {
            issues.push(ConfigIssue::new(
                *key,
                format!("set by both {var} and {file_var}; keep one"),
            ));
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let value = text
                    .strip_suffix('\n')
                    .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
                if value.trim().is_empty() {
                    issues.push(ConfigIssue::new(
                        *key,
                        format!("the file {path} named by {file_var} is empty"),
                    ));
                } else {
                    vars.insert(var, value.to_owned());
                }
            }
            Err(e) => issues.push(ConfigIssue::new(
                *key,
                format!("cannot read {path} (named by {file_var}): {e}"),
            )),
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}

fn build_issue(e: &ConfigError) -> ConfigIssue {
    match e {
        ConfigError::FileParse { cause, .. } => {
            ConfigIssue::new("", format!("malformed YAML: {cause}"))
        }
        other => ConfigIssue::new("", other.to_string()),
    }
}

/// Turns a path-tracked deserialization error into a key-path issue with a readable
/// message (and a "did you mean" for unknown keys and values).
pub(crate) fn deserialize_issue(
    e: &serde_path_to_error::Error<ConfigError>,
    env: &Environment,
    section: &str,
    also_known: &[&str],
) -> ConfigIssue {
    let mut path = e.path().to_string();
    if path == "." || path == "?" {
        path.clear();
    }
    let path = join(section, &path);
    let message = inner_message(e.inner());

    if let Some(field) = between(&message, "missing field `", "`") {
        return ConfigIssue::new(join(&path, field), "required key is missing");
    }
    if let Some(field) = between(&message, "unknown field `", "`") {
        let mut expected = backticked(message.split_once("expected").map_or("", |(_, r)| r));
        expected.extend_from_slice(also_known);
        let full = if path.ends_with(field) {
            path.clone()
        } else {
            join(&path, field)
        };
        let mut msg = String::from("unknown key");
        if let Some(s) = closest(field, expected.iter().copied()) {
            msg.push_str(&format!(" (did you mean `{s}`?)"));
        }
        msg.push_str(&env_origin(&full, env));
        return ConfigIssue::new(full, msg);
    }
    if let Some(value) = between(&message, "unknown variant `", "`") {
        let expected = backticked(message.split_once("expected").map_or("", |(_, r)| r));
        let mut msg = format!(
            "invalid value `{value}`: expected one of {}",
            expected.join(", ")
        );
        if let Some(s) = closest(value, expected.iter().copied()) {
            msg.push_str(&format!(" (did you mean `{s}`?)"));
        }
        msg.push_str(&env_origin(&path, env));
        return ConfigIssue::new(path, msg);
    }
    let msg = format!("{message}{}", env_origin(&path, env));
    ConfigIssue::new(path, msg)
}

fn inner_message(e: &ConfigError) -> String {
    match e {
        ConfigError::Type {
            unexpected,
            expected,
            ..
        } => format!("expected {expected}, found {unexpected}"),
        ConfigError::At { error, .. } => inner_message(error),
        ConfigError::Message(m) => m.clone(),
        ConfigError::NotFound(key) => {
            format!(
                "missing field `{}`",
                key.rsplit(['.', ']']).next().unwrap_or(key)
            )
        }
        other => other.to_string(),
    }
}

/// " (set by CARTRIDGE_WARP_X)" when the key came from an environment variable.
fn env_origin(path: &str, env: &Environment) -> String {
    if path.is_empty() {
        return String::new();
    }
    let var = super::keys::variable_of(path);
    if env.contains_key(&var) {
        return format!(" (set by environment variable {var})");
    }
    let file_var = format!("{var}{FILE_SUFFIX}");
    if env.contains_key(&file_var) {
        return format!(" (read from the file named by {file_var})");
    }
    PLAIN_VAR_KEYS
        .iter()
        .find(|(v, key)| *key == path && env.contains_key(*v))
        .map(|(v, _)| format!(" (set by environment variable {v})"))
        .unwrap_or_default()
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else if field.is_empty() {
        path.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}
