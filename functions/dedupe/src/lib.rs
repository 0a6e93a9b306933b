//! `dedupe`: owner of conversations (partitioned by conversation).
//!
//! It reads the keyed events of its partitions straight from `IM_INGEST`
//! and admits each itself ([`im_events::admission`]: parse, schema,
//! normalize, the stateless checks), so a send costs one stream write and
//! one hop before its commit (ingest only copies unkeyed events keyed).
//! For each admitted event, in the order JetStream stored it: drop it if its
//! `(source, id)` was applied before (and republish what it produced then),
//! check membership and permissions, give a message the next `seq` of its
//! conversation, store it, and only then publish the committed event on
//! `im.timeline.<p>.*`. A batch is one store transaction under the partition
//! owner's fence.

// The imports serve the shell too; the core-only build leaves some unused.
#![cfg_attr(not(feature = "shell"), allow(unused_imports))]

mod batch;
pub mod decide;
pub use batch::*;

use std::sync::Arc;

use im_events::admission::{admit, Rules};
use im_events::partition::partition_of;
use im_events::subjects::{accepted_subject, events_subject, push_subject, timeline_batch_subject};
use im_events::{
    Accepted, AcceptedBatch, AcceptedItem, Command, CommittedMessage, Diffusion, Envelope,
    InboundMessage, PushNotice, ReceiptItem, SyncItem, Timeline, TimelineBatch, TimelineEvent,
    Verdict, PIPELINE_SOURCE,
};
use im_runtime::consumer::Identity;
use im_runtime::publish::{publish_all, reply, reply_subject, Outgoing};
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome, Rejection};
use im_store::{ConversationEffect, ConversationStore};

use crate::decide::{decide, referenced_users, Config, MemoryView, View};

pub const FUNCTION: &str = "dedupe";

#[cfg(feature = "shell")]
mod shell;
#[cfg(feature = "shell")]
pub use shell::*;
