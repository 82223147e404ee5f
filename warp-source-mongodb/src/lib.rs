//! `Source` for MongoDB (snapshot by `_id` ranges, change streams, timestamp polling).
//!
//! The connector itself lands with its own work item (issue 5); until then
//! [`build`] refuses with a message saying so, and the rest of the system (config,
//! engine, server features) is already wired for it.

use std::sync::Arc;

use warp_core::config::{ResolvedSchema, SourceConfig};
use warp_core::{Error, Result, Source};

/// Creates the source for one schema.
pub fn build(_source: &SourceConfig, schema: &ResolvedSchema) -> Result<Arc<dyn Source>> {
    Err(Error::source_permanent(
        format!(
            "the mongodb source connector is not available in this version (schema {})",
            schema.name
        ),
        Some("see the project README for the connectors this build supports".to_owned()),
    ))
}
