//! Shared by the MongoDB source suites.

use warp_core::config::{load_str, ConfigOverrides, Environment, ResolvedSchema};
use warp_core::{FeedTable, Source};
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

/// The source of database `db` at `url` and every collection it discovers, as a shared
/// feed serves them.
#[allow(dead_code)] // not every suite opens a feed
pub async fn feed_tables(url: &str, db: &str) -> (MongoSource, Vec<FeedTable>) {
    let yaml = format!(
        "source: {{ type: mongodb, connection_string: '{url}', database: {db} }}\n\
         destination: {{ type: postgresql, connection_string: 'postgresql://u@h/d' }}\n\
         schemas:\n- name: {db}\n"
    );
    let (source, schema) = source_of(&yaml);
    let tables = (source.discover(&schema).await.unwrap().into_iter())
        .map(|t| FeedTable {
            read: schema.table(&t.id.name).read_settings(),
            schema: t,
        })
        .collect();
    (source, tables)
}
