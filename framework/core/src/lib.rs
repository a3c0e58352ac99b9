//! # pipe-framework
//!
//! The core of `pipe`: Arrow record batches flow from a [`Source`] through the metadata stage
//! (create/evolve the table), transform [`Stage`]s (the data-quality contract) and into a
//! [`Destination`]'s [`Sink`], over bounded [`channel`]s. The [`runtime`] commits a run
//! atomically or not at all. Connectors are separate crates that depend on this one only and
//! register a typed factory in a [`Registry`].

pub mod backfill;
pub mod channel;
pub mod cluster;
pub mod columns;
pub mod committed;
pub mod config;
pub mod conformance;
pub mod context;
pub mod destination;
pub mod error;
pub mod evolution;
pub mod merge_keys;
pub mod null;
pub mod operations;
pub mod parallel;
pub mod parquet_options;
pub mod pipeline;
pub mod probe;
pub mod quarantine;
pub mod registry;
pub mod runner;
pub mod runtime;
pub mod scheduler;
pub mod secret;
pub mod service;
pub mod source;
pub mod spool;
pub mod stage;
pub mod state;
pub mod store;
pub mod summary;
pub mod types;
pub mod worker;

pub use channel::{BatchReceiver, BatchSender, ChannelStats, batch_channel};
pub use context::{RunContext, State, Window};
pub use destination::{
    ColumnInfo, CommitInfo, CommitReport, CommitRequest, Destination, PrepareRequest, Registration,
    SchemaEvolution, Sink, TableInfo, WriteMode, WriteSpec,
};
pub use error::{Error, ErrorKind, Result, ResultExt, is_transient};
pub use operations::TableOperations;
pub use pipeline::Pipeline;
pub use quarantine::Quarantine;
pub use registry::{BuildContext, DestinationFactory, Registry, SourceFactory, StageFactory};
pub use secret::Secret;
pub use service::Service;
pub use source::{ExistingFile, RunSlots, Source, SourceReport};
pub use stage::{QuarantineSpec, Stage, StageOutput, StageReport};
pub use summary::{RunProgress, RunStatus, RunSummary};

/// Re-exports connector crates need, so they use exactly the framework's versions.
pub mod deps {
    pub use arrow_array;
    pub use arrow_schema;
    pub use async_trait;
    pub use tokio;
    pub use tokio_util;
}
