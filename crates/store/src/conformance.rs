//! The store conformance suite: every backend runs these same checks.
//! Each check takes fresh, empty stores and panics on a violation.
//!
//! A backend runs the whole suite with one [`conformance_suite!`]
//! invocation: the list of checks lives only here, so a new check runs on
//! every backend at once, and a backend that cannot run one must say why.
//!
//! ```ignore
//! im_store::conformance_suite! {
//!     stores: |check: &str| -> Option<Stores> { … },
//!     notifications: |check: &str| -> Option<Notifications> { … },
//!     left_out: &[("tiers_read_as_one", "why")],
//! }
//! ```

use im_events::{ConversationKind, Diffusion, MessageKind};
use serde_json::json;

use crate::{
    readable_history, unread_summary, ConversationEffect, ConversationRecord, ConversationStore,
    Fence, IdempotencyRecord, NotificationRecord, NotificationStatus, NotificationStore,
    NotifyEffect, NotifyState, Reader, Role, StoreError, StoredMessage, SyncRecord, TieringPolicy,
    UserConversation, UserEffect, UserStore,
};

mod conversations;
mod notifications;
mod tiers;
mod users;
pub use conversations::*;
pub use notifications::*;
pub use tiers::*;
pub use users::*;

/// The checks of a conversation and user store, and of a notification
/// store: `$callback!(args; store checks; notification checks)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_checks {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {
            $($args)*;
            conversation_round_trip,
            membership_intervals,
            messages_and_history,
            history_as_members_may_read_it,
            seq_fence_refuses_a_second_message,
            a_repeat_after_its_key_is_purged_is_a_new_message,
            epoch_fence_refuses_stale_owner,
            idempotency_records,
            edits_and_recalls,
            replies_reactions_blocks_and_receipts,
            user_conversations_and_unread,
            sync_log_pages_in_order,
            sync_log_compaction_keeps_the_head,
            apply_is_atomic,
            tiers_read_as_one,
            retention_deletes_by_kind,
            idempotency_keys_are_purged_by_age;
            notify_states_come_due,
            outbox_is_idempotent_and_logged,
            notify_fence_and_atomicity
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_names {
    (; $($store:ident),*; $($notify:ident),*) => {
        (&[$(stringify!($store)),*], &[$(stringify!($notify)),*])
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($stores:expr, $notifications:expr, $left_out:expr; $($store:ident),*; $($notify:ident),*) => {
        $(
            #[test]
            fn $store() {
                if let Some(reason) = $crate::conformance::left_out_reason($left_out, stringify!($store)) {
                    eprintln!("conformance `{}` left out on this backend: {reason}", stringify!($store));
                    return;
                }
                let stores: Option<$crate::conformance::Stores> = ($stores)(stringify!($store));
                if let Some(stores) = stores {
                    $crate::conformance::$store(&*stores.conversations, &*stores.users);
                }
            }
        )*
        $(
            #[test]
            fn $notify() {
                if let Some(reason) = $crate::conformance::left_out_reason($left_out, stringify!($notify)) {
                    eprintln!("conformance `{}` left out on this backend: {reason}", stringify!($notify));
                    return;
                }
                let store: Option<$crate::conformance::Notifications> = ($notifications)(stringify!($notify));
                if let Some(store) = store {
                    $crate::conformance::$notify(&*store.store);
                }
            }
        )*
        #[test]
        fn every_left_out_check_is_a_check_and_says_why() {
            $crate::conformance::check_left_out($left_out);
        }
    };
}

/// Runs every conformance check on a backend, one `#[test]` per check:
/// `stores` and `notifications` make fresh stores for the named check (or
/// `None` to skip it, having said why), `left_out` names the checks this
/// backend does not run, each with its reason.
#[macro_export]
macro_rules! conformance_suite {
    (stores: $stores:expr, notifications: $notifications:expr, left_out: $left_out:expr $(,)?) => {
        $crate::__conformance_checks!(__conformance_tests!($stores, $notifications, $left_out));
    };
}

const CHECKS: (&[&str], &[&str]) = __conformance_checks!(__conformance_names!());

/// Every check of a conversation and user store, by name.
pub const STORE_CHECKS: &[&str] = CHECKS.0;

/// Every check of a notification store, by name.
pub const NOTIFICATION_CHECKS: &[&str] = CHECKS.1;

/// Fresh stores for one check; `guard` keeps whatever they need alive (a
/// temporary directory).
pub struct Stores {
    pub conversations: Box<dyn ConversationStore>,
    pub users: Box<dyn UserStore>,
    pub guard: Box<dyn std::any::Any>,
}

/// A fresh notification store for one check.
pub struct Notifications {
    pub store: Box<dyn NotificationStore>,
    pub guard: Box<dyn std::any::Any>,
}

/// A conversation's last message for the checks.
pub fn preview(sender: &str, text: &str) -> im_events::LastMessage {
    im_events::LastMessage {
        seq: Some(1),
        sender_id: sender.into(),
        kind: MessageKind::Text,
        body: json!({ "text": text }),
        sent_at: Some("2026-01-01T00:00:00.000Z".into()),
    }
}

/// Why a backend leaves `check` out, if it does.
pub fn left_out_reason<'a>(left_out: &[(&str, &'a str)], check: &str) -> Option<&'a str> {
    left_out
        .iter()
        .find(|(name, _)| *name == check)
        .map(|(_, why)| *why)
}

/// Panics unless every left-out name is a check and has a reason.
pub fn check_left_out(left_out: &[(&str, &str)]) {
    for (name, why) in left_out {
        assert!(
            STORE_CHECKS.contains(name) || NOTIFICATION_CHECKS.contains(name),
            "`{name}` is left out but is no conformance check"
        );
        assert!(
            !why.trim().is_empty(),
            "`{name}` is left out without a reason"
        );
    }
}

pub fn fence(epoch: u64) -> Fence {
    Fence {
        scope: "conformance".into(),
        partition: 0,
        epoch,
    }
}

fn record(conversation_id: &str, last_seq: u64, diffusion: Diffusion) -> ConversationRecord {
    ConversationRecord {
        conversation_id: conversation_id.into(),
        kind: ConversationKind::Group,
        title: Some("Conformance".into()),
        last_seq,
        diffusion,
        member_count: 2,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        history_visibility: im_events::HistoryVisibility::Joined,
    }
}

pub fn message(conversation_id: &str, seq: u64, id: &str) -> StoredMessage {
    StoredMessage {
        conversation_id: conversation_id.into(),
        seq,
        message_id: id.into(),
        sender_id: "alice".into(),
        source: "urn:conformance".into(),
        event_id: format!("event-{id}"),
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        kind: MessageKind::Text,
        body: json!({"text": format!("message {seq}")}),
        mentions: vec!["bob".into()],
        edited_at: None,
        recalled_at: None,
        recalled_by: None,
        reply_to: None,
        reactions: vec![],
    }
}
