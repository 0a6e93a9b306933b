//! Storage of the pipeline behind backend-neutral traits.
//!
//! [`ConversationStore`] is owned by `dedupe` (conversations, members,
//! messages, idempotency keys); [`UserStore`] is owned by `unread` (each
//! user's conversation list and sync log). Writers apply a batch of effects
//! atomically under a [`Fence`]: a partition owner's epoch, so that a stale
//! owner that lost its partition can never write again. Readers (fanout, the
//! gateway, imctl) use the same traits.
//!
//! [`sqlite`] is the embedded backend; [`conformance`] is the test suite every
//! backend must pass.

pub mod conformance;
pub mod sqlite;
pub mod types;

pub use types::*;

/// What can go wrong in a store. The runtime maps `Fenced` to "stop owning
/// this partition", the others to a retry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(
        "fenced: partition {partition} of {scope} is owned by epoch {current}, not {attempted}"
    )]
    Fenced {
        scope: String,
        partition: u32,
        current: u64,
        attempted: u64,
    },
    #[error(
        "seq conflict: conversation {conversation_id} already has seq {seq} with another message"
    )]
    SeqConflict { conversation_id: String, seq: u64 },
    #[error("store backend: {0}")]
    Backend(String),
    /// The store was made by a newer version (or one this build cannot
    /// upgrade): refused at start, never written.
    #[error("{0}")]
    Incompatible(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The owner's claim on a partition: writes with an epoch lower than the
/// highest one the store has seen for the partition are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub scope: String,
    pub partition: u32,
    pub epoch: u64,
}

pub trait ConversationStore: Send + Sync {
    fn conversation(&self, conversation_id: &str) -> StoreResult<Option<ConversationRecord>>;
    /// Current membership of the given users (missing = not a member).
    fn memberships(&self, conversation_id: &str, users: &[String]) -> StoreResult<Vec<Membership>>;
    /// Users who receive the message with this seq: joined before it, not
    /// removed before it.
    fn members_at(&self, conversation_id: &str, seq: u64) -> StoreResult<Vec<String>>;
    fn current_members(&self, conversation_id: &str) -> StoreResult<Vec<String>>;
    fn idempotency(&self, source: &str, event_id: &str) -> StoreResult<Option<IdempotencyRecord>>;
    fn message(&self, conversation_id: &str, seq: u64) -> StoreResult<Option<StoredMessage>>;
    /// Up to `limit` messages with seq < `before_seq` (or the newest), in
    /// ascending seq order.
    fn history(
        &self,
        conversation_id: &str,
        before_seq: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>>;
    /// Reactions to the messages `from_seq..=to_seq`, ordered by seq,
    /// emoji and user.
    fn reactions(
        &self,
        conversation_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> StoreResult<Vec<Reaction>>;
    /// Whether `user_id` blocks `blocked_user_id`.
    fn blocked(&self, user_id: &str, blocked_user_id: &str) -> StoreResult<bool>;
    /// Every member's read and delivered marks that were ever raised, by user.
    fn receipts(&self, conversation_id: &str) -> StoreResult<Vec<Receipt>>;
    /// One member's marks.
    fn receipt(&self, conversation_id: &str, user_id: &str) -> StoreResult<Option<Receipt>>;
    /// Apply effects atomically, or none of them.
    fn apply(&self, fence: &Fence, effects: &[ConversationEffect]) -> StoreResult<()>;
    /// Make every apply that returned durable. Whether an apply already is
    /// when it returns depends on the backend and how it was opened
    /// (SQLite's [`sqlite::Durability::Deferred`] waits for this); where it
    /// is, this does nothing. A writer that opened its store deferred acks
    /// no input before this returns.
    fn sync(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Whether applies wait for [`ConversationStore::sync`] to be durable.
    fn sync_deferred(&self) -> bool {
        false
    }
    /// Canonical lines describing every table, for replay comparison. A
    /// message reads the same whichever tier holds it.
    fn dump(&self) -> StoreResult<Vec<String>>;
    /// One archiver pass: move messages older than the hot window to the
    /// cold tier and delete what retention no longer keeps. Each move is
    /// atomic, so a pass killed midway loses and duplicates nothing, and
    /// the next pass goes on where it stopped. `progress` hears after each
    /// conversation.
    fn archive(
        &self,
        policy: &TieringPolicy,
        now_ms: i64,
        progress: &mut dyn FnMut(&ArchiveReport),
    ) -> StoreResult<ArchiveReport>;
    /// Messages and bytes in each tier.
    fn tier_stats(&self) -> StoreResult<TierStats>;
}

pub trait UserStore: Send + Sync {
    fn user_conversation(
        &self,
        user_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<UserConversation>>;
    fn user_conversations(&self, user_id: &str) -> StoreResult<Vec<UserConversation>>;
    /// The user's conversations without their last-message previews: all
    /// that unread counts need, and cheaper to read (push reads it for
    /// every unread frame).
    fn user_conversation_counts(&self, user_id: &str) -> StoreResult<Vec<UserConversation>> {
        self.user_conversations(user_id)
    }
    fn last_sync_seq(&self, user_id: &str) -> StoreResult<u64>;
    fn effect_applied(&self, user_id: &str, key: &str) -> StoreResult<bool>;
    /// Sync items with sync_seq > `after`, ascending, at most `limit`.
    fn sync_items(&self, user_id: &str, after: u64, limit: usize) -> StoreResult<Vec<SyncRecord>>;
    fn apply(&self, fence: &Fence, effects: &[UserEffect]) -> StoreResult<()>;
    /// Compaction: forget the user's sync items up to and including
    /// `through`, and the applied-event markers of those items' events. A device whose cursor is below the floor this leaves can
    /// no longer sync from it and is told to resync from history. The floor
    /// only rises. Returns it.
    fn compact_sync(&self, user_id: &str, through: u64) -> StoreResult<u64>;
    /// The highest sync_seq compacted away (0: none).
    fn sync_floor(&self, user_id: &str) -> StoreResult<u64>;
    /// Canonical lines describing every table. The sync log appears as
    /// (user, effect key, item) sorted, plus each user's last sync_seq: the
    /// interleaving of independent conversations in a user's log depends on
    /// timing, everything else must be identical after replay.
    fn dump(&self) -> StoreResult<Vec<String>>;
}

/// The `offline` function's store: coalescing state, outbox and
/// notification log.
pub trait NotificationStore: Send + Sync {
    fn notify_state(
        &self,
        user_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<NotifyState>>;
    /// Pending states of `partition` whose window closed by `now_ms`, oldest first.
    fn due_states(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<NotifyState>>;
    /// Queued notifications of `partition` whose next attempt is due, oldest first.
    fn ready_notifications(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<NotificationRecord>>;
    /// The earliest time anything of `partition` becomes due, if anything waits.
    fn next_wakeup_ms(&self, partition: u32) -> StoreResult<Option<i64>>;
    fn notification(&self, id: &str) -> StoreResult<Option<NotificationRecord>>;
    /// The log, newest first: one user's, or everyone's.
    fn notification_log(
        &self,
        user_id: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationRecord>>;
    fn apply(&self, fence: &Fence, effects: &[NotifyEffect]) -> StoreResult<()>;
    fn dump(&self) -> StoreResult<Vec<String>>;
}

/// A user's conversation list with unread counts, consistent in itself:
/// `total_unread` is the sum of the items' `unread`, computed from one read.
/// Read-diffusion conversations take `last_seq` from the conversation.
pub fn unread_summary(
    users: &dyn UserStore,
    conversations: &dyn ConversationStore,
    user_id: &str,
) -> StoreResult<UnreadSummary> {
    summarize(users.user_conversations(user_id)?, conversations)
}

/// Who reads a conversation's history: a service (every message) or a user.
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    Service,
    User(&'a str),
}

/// A page of history as `reader` may see it: `None` when the reader is not a
/// member (a missing conversation answers the same, so a refusal reveals
/// nothing); with `joined` history a member sees only messages after the seq
/// at which they joined, however far back they page.
pub fn readable_history(
    conversations: &dyn ConversationStore,
    reader: Reader<'_>,
    conversation_id: &str,
    before_seq: Option<u64>,
    limit: usize,
) -> StoreResult<Option<Vec<StoredMessage>>> {
    let floor = match reader {
        Reader::Service => 0,
        Reader::User(user) => {
            let Some(member) = conversations
                .memberships(conversation_id, &[user.to_string()])?
                .pop()
            else {
                return Ok(None);
            };
            match conversations.conversation(conversation_id)? {
                Some(record)
                    if record.history_visibility == im_events::HistoryVisibility::Shared =>
                {
                    0
                }
                Some(_) => member.joined_seq,
                None => return Ok(None),
            }
        }
    };
    if before_seq.is_some_and(|before| before <= floor + 1) {
        return Ok(Some(Vec::new()));
    }
    let mut messages = conversations.history(conversation_id, before_seq, limit)?;
    messages.retain(|message| message.seq > floor);
    with_reactions(conversations, conversation_id, &mut messages)?;
    Ok(Some(messages))
}

/// Fill in the reactions of a page of messages (one read for the page).
pub fn with_reactions(
    conversations: &dyn ConversationStore,
    conversation_id: &str,
    messages: &mut [StoredMessage],
) -> StoreResult<()> {
    let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
        return Ok(());
    };
    let mut grouped =
        group_reactions(conversations.reactions(conversation_id, first.seq, last.seq)?);
    for message in messages.iter_mut() {
        // A recalled message shows no reactions.
        if message.recalled_at.is_none() {
            message.reactions = grouped.remove(&message.seq).unwrap_or_default();
        }
    }
    Ok(())
}

/// One conversation's unread count and the user's total, as of a point of
/// the user's sync log: what an `unread` frame says.
pub use im_events::UnreadCounts as UnreadState;

/// The [`UnreadState`] of one conversation for `user`.
pub fn unread_state(
    users: &dyn UserStore,
    conversations: &dyn ConversationStore,
    user_id: &str,
    conversation_id: &str,
) -> StoreResult<UnreadState> {
    let as_of = users.last_sync_seq(user_id)?;
    let summary = unread_counts(users, conversations, user_id)?;
    let unread = summary
        .items
        .iter()
        .find(|row| row.conversation_id == conversation_id)
        .map(UserConversation::unread)
        .unwrap_or(0);
    Ok(UnreadState {
        unread,
        total: summary.total_unread,
        as_of,
    })
}

/// [`unread_summary`] without the last-message previews: for unread frames.
pub fn unread_counts(
    users: &dyn UserStore,
    conversations: &dyn ConversationStore,
    user_id: &str,
) -> StoreResult<UnreadSummary> {
    summarize(users.user_conversation_counts(user_id)?, conversations)
}

fn summarize(
    rows: Vec<UserConversation>,
    conversations: &dyn ConversationStore,
) -> StoreResult<UnreadSummary> {
    let mut items = Vec::with_capacity(rows.len());
    for mut row in rows {
        if row.diffusion == im_events::Diffusion::Read {
            if let Some(conversation) = conversations.conversation(&row.conversation_id)? {
                row.last_seq = row.last_seq.max(conversation.last_seq);
            }
        }
        items.push(row);
    }
    let total_unread = items.iter().map(UserConversation::unread).sum();
    Ok(UnreadSummary {
        items,
        total_unread,
    })
}

/// A stable 64-bit digest of dump lines (FNV-1a; for comparison, not security).
pub fn digest(lines: &[String]) -> String {
    let mut joined = Vec::new();
    for line in lines {
        joined.extend_from_slice(line.as_bytes());
        joined.push(b'\n');
    }
    format!("{:016x}", im_events::partition::fnv1a64(&joined))
}
