//! `unread`: each user's conversation list, unread counts and sync log
//! (partitioned by user).
//!
//! Per conversation `unread = last_seq - read_seq`; a user's own message moves
//! their `read_seq` too. Edits and recalls take no seq and change no count.
//! Every change a device must learn gets the next `sync_seq` of the user, so
//! a device syncs from its cursor. Every step is idempotent: a message at or
//! below `last_seq`, a read mark at or below `read_seq`, an edit or recall
//! already marked applied, all change nothing.

// The imports serve the shell too; the core-only build leaves some unused.
#![cfg_attr(not(feature = "shell"), allow(unused_imports))]

use std::collections::HashMap;
use std::sync::Arc;

use im_events::{
    Delivery, DeliveryPayload, Diffusion, PushNotice, ReadItem, SyncItem, TimelineEvent,
    UnreadCounts,
};
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome};
use im_store::{
    ConversationStore, StoreError, SyncRecord, UserConversation, UserEffect, UserStore,
};

pub const FUNCTION: &str = "unread";

#[cfg(feature = "shell")]
mod shell;
#[cfg(feature = "shell")]
pub use shell::*;

mod batch;
mod decide;
pub use batch::*;
pub use decide::*;

#[cfg(test)]
mod compaction_tests {
    use super::*;

    fn appended(user: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<UserEffect> {
        seqs.map(|n| {
            UserEffect::AppendSync(SyncRecord {
                user_id: user.into(),
                sync_seq: n,
                event_key: format!("k{n}"),
                item: SyncItem::Read(im_events::ReadItem {
                    conversation_id: "c".into(),
                    seq: n,
                }),
            })
        })
        .collect()
    }

    #[test]
    fn a_log_is_compacted_once_every_so_many_appends_past_what_it_keeps() {
        assert!(compactions(&appended("bob", 1..=100), 100, 10).is_empty());
        assert_eq!(
            compactions(&appended("bob", 101..=125), 100, 10),
            vec![("bob".to_string(), 10), ("bob".to_string(), 20)]
        );
        let mut both = appended("bob", 105..=110);
        both.extend(appended("ann", 108..=111));
        assert_eq!(
            compactions(&both, 100, 10),
            vec![("bob".to_string(), 10), ("ann".to_string(), 10)]
        );
        assert_eq!(SyncRetention::keeping(10_000).every, 1_000);
        assert_eq!(SyncRetention::keeping(3).every, 1);
    }
}

#[cfg(test)]
mod tests;
