//! `fanout`: turns each committed conversation event into per-recipient
//! deliveries on `im.delivery.<user partition>.<kind>`.
//!
//! Recipients are grouped by user partition, so one delivery carries every
//! recipient of that partition: a 1:1 message costs at most two stream
//! writes, a 50-member group at most one per user partition. Groups in read
//! diffusion (above the large-group threshold) get no per-member copies: only
//! the sender's own (so their read mark moves) and the mentioned members'
//! (for offline notifications), and members pull the conversation timeline.

// The imports serve the shell too; the core-only build leaves some unused.
#![cfg_attr(not(feature = "shell"), allow(unused_imports))]

use std::collections::BTreeMap;
use std::sync::Arc;

use im_events::partition::partition_of;
use im_events::subjects::delivery_subject;
use im_events::{
    Delivery, DeliveryData, DeliveryPayload, Diffusion, Envelope, Timeline, TimelineBatch,
    TimelineEvent, PIPELINE_SOURCE,
};
use im_runtime::publish::{publish_all, Outgoing};
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome};
use im_store::ConversationStore;

pub const FUNCTION: &str = "fanout";

#[cfg(feature = "shell")]
mod shell;
#[cfg(feature = "shell")]
pub use shell::*;

mod batch;
mod decide;
pub use batch::*;
pub use decide::*;

#[cfg(test)]
mod tests;
