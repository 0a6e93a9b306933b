//! The ScyllaDB backend of the pipeline's stores, for when one machine is
//! not enough: every store trait over one cluster connection, with the CQL
//! schema in [`schema`] (`schemas/scylla/schema.cql`), bucketed partitions
//! ([`buckets`]), prepared statements, token-aware routing, LOCAL_QUORUM by
//! default and lightweight transactions for the fences.
//!
//! The conformance suite of `im-store` runs against it when `IM_SCYLLA_URI`
//! is set (`tests/conformance.rs`).

pub mod buckets;
pub mod config;
pub mod errors;
pub mod rows;
pub mod schema;
mod store;

pub use config::ScyllaConfig;
pub use store::{statement_text, ScyllaStore, STATEMENTS};
