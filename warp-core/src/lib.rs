//! Source-neutral model and engine of cartridge-warp.
//!
//! Connectors implement [`Source`] and [`Sink`] + [`CheckpointStore`] (and the runtime's
//! [`ControlStore`] and [`LandedRows`] for status, signals and verification); the [`Pipeline`]
//! snapshots each table in resumable chunks, then streams its changes in batches that are
//! committed together with their checkpoint, so a crash at any point loses nothing and
//! applies nothing twice.
//!
//! Embedding a pipeline takes a few lines (shown here with the in-memory connectors of the
//! `test-utils` feature; real ones come from the connector crates):
//!
//! ```
//! # #[cfg(feature = "test-utils")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use warp_core::config::{load_str, ConfigOverrides, Environment};
//! use warp_core::testing::{MemorySink, MemorySource};
//! use warp_core::{EngineSettings, Pipeline};
//!
//! let yaml = r#"
//! source: { type: mysql, connection_string: "mysql://app@db/shop" }
//! destination: { type: postgresql, connection_string: "postgresql://warp@pg/dw" }
//! schemas: [ { name: shop } ]
//! "#;
//! let loaded = load_str(yaml, "inline", &Environment::new(), &ConfigOverrides::default()).unwrap();
//! let schema = loaded.config.schemas_to_run(None).remove(0);
//!
//! let source = MemorySource::with_sample_table("shop", "orders", 100);
//! let sink = MemorySink::new();
//! let pipeline = Pipeline::new(
//!     schema,
//!     Arc::new(source.clone()),
//!     Arc::new(sink.clone()),
//!     Arc::new(sink.control()),
//!     EngineSettings::from_config(&loaded.config, "embedded"),
//! );
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let run = tokio::spawn(pipeline.run(shutdown.clone()));
//! sink.wait_until_equal(&source, "shop", "orders").await;
//! shutdown.cancel();
//! run.await.unwrap().unwrap();
//! # });
//! ```

pub mod config;
pub mod control;
mod engine;
pub mod error;
pub mod event;
pub mod failpoint;
pub mod lease;
mod mask;
pub mod metrics;
pub mod position;
pub mod read_settings;
pub mod schema;
pub mod sink;
pub mod source;
#[cfg(feature = "test-utils")]
pub mod testing;
pub mod tls;
pub mod value;
pub mod watermark;

pub use control::report::{
    CheckpointPhase, DeadLetter, DeadLetterStatus, DeploymentStatus, ReplayReport, ReplicaReport,
    SignalKind, TableReport,
};
pub use control::status::{StatusBoard, TableState, TableStatus, VerificationStatus};
pub use control::{
    ControlStore, DeadLetterFilter, Destination, Fix, LandedRow, LandedRows, Repaired,
};
pub use engine::{
    single_table, Backoff, Batch, EngineSettings, OrdKey, Pipeline, PipelineControl, TablePlan,
};
pub use error::{Error, Result, Retry};
pub use event::{
    Cascade, CascadeAction, Change, ChangeEvent, Commit, FeedItem, Hop, Operation, StreamFragment,
    TableChange,
};
pub use lease::{fair_share, Lease, LeaseStore, LeaseTiming};
pub use mask::mask_secrets;
pub use position::Position;
pub use read_settings::{FeedTable, ReadSettings, TableReads};
pub use schema::{
    Column, ColumnType, LandingVersion, SchemaChange, ShapeError, TableId, TableSchema,
};
pub use sink::{
    Checkpoint, CheckpointStore, CheckpointUpdate, ChunkClaim, ChunkProgress, ChunkScope,
    Committed, CopiedChunk, CopyInStream, FencingToken, Phase, Signal, Sink, SinkTransaction,
    TableKey, Target,
};
pub use source::{
    ChangeStrategy, ChunkPage, ChunkRead, KeyRange, LogRetention, SnapshotPlan, Source,
};
pub use tls::{ConnectionSecurity, TlsFailure, Verification};
pub use value::{cmp_keys, Decimal, Interval, Key, Row, Value};
pub use watermark::{poll_every, Pace, Poll, PollBatch, Watermark};
