//! Semantic validation: pure, collects every problem with its key path.

use std::collections::HashSet;

use super::errors::{closest, ConfigIssue};
use super::model::{ChangeDetection, Mode, SchemaConfig, TableSettings, WarpConfig};
use super::resolve::TableFilter;

#[derive(Debug, Default)]
pub(crate) struct Report {
    pub errors: Vec<ConfigIssue>,
    pub warnings: Vec<String>,
}

impl Report {
    fn error(&mut self, path: impl Into<String>, message: impl AsRef<str>) {
        self.errors.push(ConfigIssue::new(path, message));
    }

    fn warn(&mut self, path: &str, message: impl AsRef<str>) {
        self.warnings.push(format!("{path}: {}", message.as_ref()));
    }
}

/// Below this, one slow renewal round trip could cost a live replica its tables.
const MIN_LEASE_TTL_SECS: f64 = 3.0;

pub(crate) fn validate(cfg: &WarpConfig, schema_selection: Option<&str>) -> Report {
    let mut r = Report::default();
    if cfg.performance.lease_ttl.get() < MIN_LEASE_TTL_SECS {
        r.error(
            "performance.lease_ttl",
            format!(
                "must be at least {MIN_LEASE_TTL_SECS} seconds (replicas renew every third of it)"
            ),
        );
    }
    source(cfg, &mut r);
    destination(cfg, &mut r);
    schemas(cfg, schema_selection, &mut r);
    monitoring(cfg, &mut r);
    if cfg.logging.masked_columns.is_some() {
        r.error(
            "logging.masked_columns",
            "not supported, and not needed: row values never reach logs, `status` or metrics, so there is nothing to mask; dead letters keep whole rows (for replay) in the metadata schema, readable only with the destination's grants (docs/security.md). Remove the key",
        );
    }
    r
}

fn source(cfg: &WarpConfig, r: &mut Report) {
    let s = &cfg.source;
    let ty = s.source_type;
    let strategy = s.strategy();
    if !ty.supports(strategy) {
        r.error(
            "source.change_detection_strategy",
            format!(
                "`{}` is not available for a {} source (use `{}` or `timestamp`)",
                strategy.as_str(),
                ty.as_str(),
                ty.default_strategy().as_str()
            ),
        );
    }
    if strategy == ChangeDetection::Timestamp && s.change_detection_column.is_none() {
        for (i, schema) in cfg.schemas.iter().enumerate() {
            if schema.change_detection_column.is_none() && !all_tables_name_column(schema) {
                r.error(
                    "source.change_detection_column",
                    format!(
                        "required with change_detection_strategy `timestamp` (or set \
                         schemas[{i}].change_detection_column, or one per table)"
                    ),
                );
                break;
            }
        }
    }
    if let Some(tz) = &s.timezone {
        if !is_utc(tz) {
            r.error(
                "source.timezone",
                format!("`{tz}`: only UTC is supported. Zone-less source date-times (MySQL and BigQuery DATETIME) land unchanged as `timestamp without time zone`, and zoned ones (TIMESTAMP, MongoDB dates) as instants, so no other zone would be applied to anything; remove the key or set UTC"),
            );
        }
    }
}

fn all_tables_name_column(schema: &SchemaConfig) -> bool {
    let Some(list) = &schema.table_whitelist else {
        return false;
    };
    list.iter().all(|name| {
        !name.contains(['*', '?'])
            && schema
                .tables
                .get(name)
                .is_some_and(|t| t.change_detection_column.is_some())
    })
}

/// Whether `tz` is one of the spellings of UTC (`UTC`, `Etc/UTC`, `Z`, `+00:00`).
fn is_utc(tz: &str) -> bool {
    let t = tz.trim();
    ["utc", "etc/utc", "z", "+00:00", "-00:00"]
        .iter()
        .any(|u| t.eq_ignore_ascii_case(u))
}

fn destination(cfg: &WarpConfig, r: &mut Report) {
    let d = &cfg.destination;
    if d.connection_string.is_none() {
        r.error(
            "destination.connection_string",
            "required (set it in the file or in CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING)",
        );
    }
    if d.metadata_schema.trim().is_empty() {
        r.error("destination.metadata_schema", "must not be empty");
    }
    if d.schema.as_deref().is_some_and(|s| s.trim().is_empty()) {
        r.error("destination.schema", "must not be empty");
    }
    if d.schema.as_deref() == Some(d.metadata_schema.as_str()) {
        r.error(
            "destination.schema",
            "must differ from destination.metadata_schema (replicated tables and bookkeeping would mix)",
        );
    }
    soft_delete_columns(
        Some(&d.soft_delete_column),
        Some(&d.deleted_at_column),
        "destination",
        r,
    );
}

/// The soft-delete columns' names: not empty, not each other, not another bookkeeping
/// column's. (A source column of the same name is found by `run --dry-run`, which needs
/// the source's tables.)
fn soft_delete_columns(flag: Option<&str>, at: Option<&str>, path: &str, r: &mut Report) {
    for (key, name) in [("soft_delete_column", flag), ("deleted_at_column", at)] {
        let Some(name) = name else { continue };
        if name.trim().is_empty() {
            r.error(format!("{path}.{key}"), "must not be empty");
        } else if name.starts_with("_cartridge_") {
            r.error(
                format!("{path}.{key}"),
                "names starting with _cartridge_ are the replicator's own bookkeeping columns",
            );
        }
    }
    if let (Some(flag), Some(at)) = (flag, at) {
        if flag == at {
            r.error(
                format!("{path}.deleted_at_column"),
                "must differ from soft_delete_column",
            );
        }
    }
}

fn schemas(cfg: &WarpConfig, selection: Option<&str>, r: &mut Report) {
    let mut seen = HashSet::new();
    for (i, schema) in cfg.schemas.iter().enumerate() {
        let at = format!("schemas[{i}]");
        if schema.name.trim().is_empty() {
            r.error(format!("{at}.name"), "must not be empty");
        } else if !seen.insert(schema.name.as_str()) {
            r.error(
                format!("{at}.name"),
                format!("duplicate schema `{}`", schema.name),
            );
        }
        if schema.name == cfg.destination.metadata_schema && cfg.mode == Mode::Multi {
            r.error(
                format!("{at}.name"),
                "must differ from destination.metadata_schema in multi mode",
            );
        }
        schema_tables(cfg, schema, &at, r);
    }
    let names: Vec<&str> = cfg.schemas.iter().map(|s| s.name.as_str()).collect();
    let must_exist = |path: &str, name: &str, r: &mut Report| {
        if !names.is_empty() && !names.contains(&name) {
            let mut msg = format!(
                "schema `{name}` is not among `schemas` ({})",
                names.join(", ")
            );
            if let Some(s) = closest(name, names.iter().copied()) {
                msg.push_str(&format!("; did you mean `{s}`?"));
            }
            r.error(path, msg);
        }
    };
    match cfg.mode {
        Mode::Single => match (&cfg.single_schema_name, names.len()) {
            (Some(name), _) => must_exist("single_schema_name", name, r),
            (None, 1) => {}
            (None, _) => r.error(
                "single_schema_name",
                "single mode needs a schema: set single_schema_name or pass --schema",
            ),
        },
        Mode::Multi => {
            if names.is_empty() {
                r.error("schemas", "multi mode needs at least one schema");
            }
            if let Some(name) = selection {
                must_exist("--schema", name, r);
            }
        }
    }
}

fn schema_tables(cfg: &WarpConfig, schema: &SchemaConfig, at: &str, r: &mut Report) {
    if schema.table_whitelist.is_some() && schema.table_blacklist.is_some() {
        r.warn(
            at,
            "both table_whitelist and table_blacklist are set; the whitelist wins",
        );
    }
    for (key, list) in [
        ("table_whitelist", &schema.table_whitelist),
        ("table_blacklist", &schema.table_blacklist),
    ] {
        for (i, pattern) in list.iter().flatten().enumerate() {
            if let Err(e) = glob::Pattern::new(pattern) {
                r.error(
                    format!("{at}.{key}[{i}]"),
                    format!("`{pattern}` is not a valid pattern: {e}"),
                );
            }
        }
    }
    let filter = TableFilter::new(
        schema.table_whitelist.clone(),
        schema.table_blacklist.clone(),
    );
    let mut seen = HashSet::new();
    table_keys(cfg, &schema.settings(), at, r);
    for (name, settings) in &schema.tables.0 {
        let path = format!("{at}.tables.{name}");
        if !seen.insert(name.as_str()) {
            r.error(&path, "listed twice");
        }
        if !filter.includes(name) {
            r.warn(
                &path,
                "configured but not replicated: table_whitelist/table_blacklist exclude it",
            );
        }
        table_keys(cfg, settings, &path, r);
    }
}

fn table_keys(cfg: &WarpConfig, t: &TableSettings, at: &str, r: &mut Report) {
    soft_delete_columns(
        t.soft_delete_column.as_deref(),
        t.deleted_at_column.as_deref(),
        at,
        r,
    );
    let ty = cfg.source.source_type;
    if !ty.is_document_store() {
        if t.flatten_depth.is_some() {
            r.warn(
                &format!("{at}.flatten_depth"),
                "only applies to mongodb sources; ignored",
            );
        }
        if t.document_column.is_some() {
            r.warn(
                &format!("{at}.document_column"),
                "only applies to mongodb sources; ignored",
            );
        }
    }
    if t.delete_detection_interval.is_some() && cfg.source.strategy() != ChangeDetection::Timestamp
    {
        r.warn(
            &format!("{at}.delete_detection_interval"),
            "only applies to timestamp polling; streams see deletes directly",
        );
    }
    if let Some(cols) = &t.exclude_columns {
        if let Some(pk) = &t.primary_key {
            if let Some(c) = pk.0.iter().find(|c| cols.contains(c)) {
                r.error(
                    format!("{at}.exclude_columns"),
                    format!("cannot exclude key column `{c}`"),
                );
            }
        }
    }
}

fn monitoring(cfg: &WarpConfig, r: &mut Report) {
    let m = &cfg.monitoring;
    if m.metrics_enabled && m.metrics_port == 0 {
        r.error(
            "monitoring.metrics_port",
            "expected a port between 1 and 65535",
        );
    }
    if m.health_check_enabled && m.health_check_port == 0 {
        r.error(
            "monitoring.health_check_port",
            "expected a port between 1 and 65535",
        );
    }
    if m.metrics_enabled && m.health_check_enabled && m.metrics_port == m.health_check_port {
        r.error(
            "monitoring.health_check_port",
            format!(
                "must differ from monitoring.metrics_port ({})",
                m.metrics_port
            ),
        );
    }
    let endpoints = [
        ("prometheus_endpoint", &m.prometheus_endpoint),
        ("health_endpoint", &m.health_endpoint),
        ("readiness_endpoint", &m.readiness_endpoint),
        ("startup_endpoint", &m.startup_endpoint),
    ];
    for (key, value) in endpoints {
        if !value.starts_with('/') {
            r.error(
                format!("monitoring.{key}"),
                format!("must start with `/`, got `{value}`"),
            );
        }
    }
}
