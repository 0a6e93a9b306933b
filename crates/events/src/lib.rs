//! Events of the IM pipeline: the public CloudEvents contract and the internal
//! envelopes that travel between functions.
//!
//! Every event on every stream is a CloudEvents 1.0 structured JSON document.
//! Inbound events are parsed from either NATS content mode ([`inbound`]),
//! validated against the JSON Schemas in `schemas/events/` ([`schema`]) and
//! turned into a typed [`Command`]. The crate is pure: no IO, no clock; time
//! is passed in by callers.

pub mod admission;
pub mod codes;
pub mod frames;
pub mod ids;
pub mod inbound;
pub mod model;
pub mod partition;
pub mod push;
pub mod reactions;
pub mod schema;
pub mod subjects;
pub mod sync;
pub mod trace;

pub use codes::{ErrorCode, EventError};
pub use inbound::{parse_inbound, InboundMessage};
pub use model::*;
pub use sync::{
    LastMessage, PushNotice, ReadItem, ReceiptItem, SyncItem, SyncMessage, UnreadCounts,
};
pub use trace::Trace;

/// Shared by the property tests of every crate.
pub mod testing {
    /// Cases per property: `PROPTEST_CASES` if set, else 4,096 (the fuzzing
    /// budget `./infra/test.sh` runs with).
    pub fn property_cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(4096)
    }
}
