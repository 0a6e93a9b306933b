//! The consumer runtime every function runs on.
//!
//! A function supplies a [`BatchHandler`]: given a batch of messages from one
//! partition, it makes their effects durable and says per message whether it
//! is done, should be retried, or is rejected. The runtime does the rest:
//! creates streams and consumers from `schemas/streams.json` ([`topology`]),
//! claims partitions with a lease so each has one active owner ([`lease`]),
//! fetches in batches, acks only after the handler returned, naks with
//! backoff, dead-letters rejects and exhausted retries ([`dlq`]), drains on
//! SIGTERM ([`shutdown`]) and exports Prometheus metrics ([`telemetry`]).

pub mod backoff;
pub mod config;
pub mod config_file;
pub mod consumer;
pub mod dlq;
pub mod error;
pub mod lease;
pub mod nats_auth;
pub mod presence;
pub mod process;
pub mod publish;
pub mod secrets;
pub mod shutdown;
pub mod stores;
pub mod telemetry;
pub mod topology;
pub mod trace;

pub use config::CommonArgs;
pub use consumer::{
    blocking, hold_limit, parse_internal, run_function, BatchHandler, HandlerError, Incoming,
    Outcome, Rejection,
};
pub use error::{Error, Result};
pub use lease::Claim;
pub use shutdown::Shutdown;

/// Every process of the pipeline allocates through mimalloc: glibc's
/// malloc family was ~7 % of all CPU samples at 100 msg/s (its fastbin
/// consolidation alone 1.1 %), most of it in these processes' short-lived
/// batch buffers (docs/BENCHMARKS.md, "The allocator, the idle session, pushed frames").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
