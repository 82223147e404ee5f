//! In-memory `Source`, `Sink` and control store (`CheckpointStore`, `LeaseStore`) with failure injection, for engine
//! tests and embedders' own tests. Not for production: nothing here is durable.

mod config_keys;
mod faults;
mod memory_control;
mod memory_sink;
mod memory_source;

pub use config_keys::{accepted_keys, documented_section};
pub use faults::{FailPoint, Faults};
pub use memory_control::MemoryControl;
pub use memory_sink::{MemorySink, StoredRow};
pub use memory_source::MemorySource;

use std::time::Duration;

/// Polls `condition` every few milliseconds until it holds, panicking with `what` after
/// `timeout`. Tests wait on conditions, never on fixed sleeps.
pub async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`wait_for`] with a condition that must itself wait (a query, say).
pub async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
