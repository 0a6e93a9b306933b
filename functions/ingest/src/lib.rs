//! `ingest`: the front door. Parses every inbound CloudEvent (structured or
//! binary mode), validates it against its schema, normalizes it, applies the
//! checks that need no state, and forwards it to `im.accepted.<p>.<type>`,
//! partitioned by conversation so that one conversation's events stay in
//! order. Membership is checked by `dedupe`, the only place that sees a
//! conversation's events in order (a send right after its create must pass).
//! Everything refused ends in `IM_DLQ` with a reason.
//!
//! Ingest itself is partitioned like dedupe: partition p reads the events
//! publishers keyed by conversation and IM_INGEST's transform stored under
//! `im.keyed.p.…`; partition 0 also reads the unkeyed `im.ingest.>` ones
//! (see `im_events::subjects::keyed_ingest_subject`), and re-publishes
//! each one it can read keyed by its conversation instead of processing
//! it: processed where it was read, an unkeyed event would race the keyed
//! events of its conversation in another partition (a send right after a
//! keyed create refused as not_member). The copy, stored after the
//! original, is processed in its conversation's partition; replay skips
//! the originals that have copies ([`REKEYED_FROM`]).

// The imports serve the shell too; the core-only build leaves some unused.
#![cfg_attr(not(feature = "shell"), allow(unused_imports))]

use std::sync::Arc;

use im_events::ids::direct_members;
use im_events::inbound::{Inbound, Limits};
use im_events::partition::partition_of;
use im_events::subjects::{accepted_batch_subject, accepted_subject};
use im_events::{
    message_id_for, parse_inbound, rfc3339_ms, Accepted, AcceptedBatch, AcceptedItem, Command,
    ConversationKind, Envelope, ErrorCode, EventError, InboundMessage,
};
use im_runtime::consumer::Identity;
use im_runtime::publish::{publish_all, reply, reply_subject, Outgoing};
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome};

pub const FUNCTION: &str = "ingest";

#[cfg(feature = "shell")]
mod shell;
#[cfg(feature = "shell")]
pub use shell::*;

mod decide;
pub use decide::*;

#[cfg(test)]
mod tests;
