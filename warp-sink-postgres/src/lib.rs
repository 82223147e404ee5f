//! `Sink` and `CheckpointStore` for PostgreSQL (landing tables, metadata schema,
//! exactly-once apply). The implementation lands with its own work item (issue 3).

use warp_core::config::DestinationConfig;
use warp_core::{Destination, Error, Result};

/// Creates the sink and the checkpoint store (one PostgreSQL database holds both, so a
/// batch and its checkpoint commit in one transaction).
pub fn build(_destination: &DestinationConfig) -> Result<Destination> {
    Err(Error::sink_permanent(
        "the postgresql sink is not available in this version",
        Some("see the project README for the connectors this build supports".to_owned()),
    ))
}
