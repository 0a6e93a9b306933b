//! `ingest`: the front door for events published without a key.
//!
//! Publishers that know an event's conversation (the gateway, `imctl`, the
//! HTTP route, the SDK's services) publish it keyed, on
//! `im.ingest.k.<hex of the conversation id>.<type>`; the server stores it
//! in the conversation's partition (`im.keyed.<p>.…`) and `dedupe` reads it
//! from there and admits it itself ([`im_events::admission`]): one stream
//! write and one hop per message instead of two.
//!
//! An event published unkeyed (`im.ingest.<type>`) is read here, by one
//! consumer over every unkeyed subject. Ingest admits it with the same
//! checks; a refused one is dead-lettered with its reason (and a waiting
//! publisher answered), an admitted one is published again keyed by its
//! conversation, with its headers (the reply subject of a waiting
//! publisher, a binary-mode event's attributes) but JetStream's own, and
//! [`REKEYED_FROM`] naming the original. The copy is stored after
//! everything published before the original, so it is applied in its
//! conversation's partition in causal order (a send published unkeyed
//! right after a keyed create follows the create); `imctl replay` skips
//! the originals that have copies.

// The imports serve the shell too; the core-only build leaves some unused.
#![cfg_attr(not(feature = "shell"), allow(unused_imports))]

use std::sync::Arc;

use im_events::admission::{admit, Rules};
pub use im_events::admission::{rekeyed_from, REKEYED_FROM};
use im_events::{ErrorCode, EventError, InboundMessage};
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
