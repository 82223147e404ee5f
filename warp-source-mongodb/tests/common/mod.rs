//! Shared by the MongoDB source suites.

use warp_core::config::{load_str, ConfigOverrides, Environment, ResolvedSchema};
use warp_source_mongodb::MongoSource;

/// The source and its one schema as the config loader builds them from `yaml`.
pub fn source_of(yaml: &str) -> (MongoSource, ResolvedSchema) {
    let loaded = load_str(
        yaml,
        "test",
        &Environment::new(),
        &ConfigOverrides::default(),
    )
    .expect("config");
    let schema = loaded.config.schemas_to_run(None).remove(0);
    let source = MongoSource::new(&loaded.config.source, &schema).expect("source");
    (source, schema)
}
