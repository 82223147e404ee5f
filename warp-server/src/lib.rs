//! The cartridge-warp runtime: builds connectors from the configuration (each behind a
//! cargo feature), runs one pipeline per schema, handles signals and telemetry.

pub mod connectors;
pub mod dlq;
mod error;
pub mod health;
mod http;
mod metrics_server;
mod progress;
pub mod retention;
pub mod runtime;
pub mod status;
pub mod status_page;
pub mod telemetry;
pub mod verify;

pub use error::ServerError;
pub use runtime::{run, RunOptions};
