//! Rows and effects, shared by every backend.

use im_events::{ConversationKind, Diffusion, MessageKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    pub conversation_id: String,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub last_seq: u64,
    pub diffusion: Diffusion,
    pub member_count: u64,
    pub created_at: String,
    pub history_visibility: im_events::HistoryVisibility,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
    pub fn parse(text: &str) -> Role {
        if text == "admin" {
            Role::Admin
        } else {
            Role::Member
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub user_id: String,
    pub role: Role,
    /// The conversation's last seq when this membership began: with
    /// `joined` history the member reads only messages after it.
    pub joined_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub conversation_id: String,
    pub seq: u64,
    pub message_id: String,
    pub sender_id: String,
    pub source: String,
    pub event_id: String,
    pub sent_at: String,
    pub kind: MessageKind,
    pub body: Value,
    pub mentions: Vec<String>,
    pub edited_at: Option<String>,
    pub recalled_at: Option<String>,
    pub recalled_by: Option<String>,
    /// The seq of the message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Reactions per emoji, as history shows them: not part of the message
    /// row (the store keeps them apart), filled in by [`crate::readable_history`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionGroup>,
}

impl StoredMessage {
    /// The committed message this row holds, delivered by `diffusion`.
    pub fn committed(&self, diffusion: Diffusion) -> im_events::CommittedMessage {
        im_events::CommittedMessage {
            message_id: self.message_id.clone(),
            conversation_id: self.conversation_id.clone(),
            seq: self.seq,
            sender_id: self.sender_id.clone(),
            source: self.source.clone(),
            event_id: self.event_id.clone(),
            sent_at: self.sent_at.clone(),
            kind: self.kind,
            body: self.body.clone(),
            mentions: self.mentions.clone(),
            diffusion,
            reply_to: self.reply_to,
        }
    }

    /// The row as a sync item, with what happened to it since it was sent.
    pub fn sync_item(&self, diffusion: Diffusion) -> im_events::SyncItem {
        im_events::SyncItem::Message(im_events::SyncMessage {
            message: self.committed(diffusion),
            edited_at: self.edited_at.clone(),
            recalled_at: self.recalled_at.clone(),
            recalled_by: self.recalled_by.clone(),
        })
    }
}

/// A stored preview ([`im_events::LastMessage`]) read back: one that does
/// not parse is an error that says how to rebuild, never a missing preview.
pub fn parse_last_message(text: Option<&str>) -> Result<Option<im_events::LastMessage>, String> {
    match text {
        None | Some("") => Ok(None),
        Some(text) => serde_json::from_str(text).map(Some).map_err(|error| {
            format!("stored last message is unreadable ({error}): rebuild with `imctl replay`")
        }),
    }
}

/// One emoji on a message and who reacted with it (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionGroup {
    pub emoji: String,
    pub users: Vec<String>,
}

/// One user's reaction to one message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reaction {
    pub conversation_id: String,
    pub seq: u64,
    pub emoji: String,
    pub user_id: String,
}

/// How far a member has read and received a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub user_id: String,
    pub read_seq: u64,
    pub delivered_seq: u64,
}

/// Group reactions by message seq, then by emoji (in the order first
/// seen, which for a store's ordered read is by emoji).
pub fn group_reactions(
    reactions: Vec<Reaction>,
) -> std::collections::BTreeMap<u64, Vec<ReactionGroup>> {
    let mut grouped: std::collections::BTreeMap<u64, Vec<ReactionGroup>> = Default::default();
    for reaction in reactions {
        let groups = grouped.entry(reaction.seq).or_default();
        match groups.iter_mut().find(|g| g.emoji == reaction.emoji) {
            Some(group) => group.users.push(reaction.user_id),
            None => groups.push(ReactionGroup {
                emoji: reaction.emoji,
                users: vec![reaction.user_id],
            }),
        }
    }
    for groups in grouped.values_mut() {
        groups.sort_by(|a, b| a.emoji.cmp(&b.emoji));
        for group in groups.iter_mut() {
            group.users.sort();
        }
    }
    grouped
}

/// What dedupe remembers of an event it applied, to answer its duplicates
/// the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    pub source: String,
    pub event_id: String,
    pub conversation_id: String,
    /// For sends: the committed message.
    pub seq: Option<u64>,
    pub message_id: Option<String>,
    /// For other events: the timeline events they produced, so a duplicate
    /// republishes exactly them.
    pub outputs: Vec<im_events::TimelineEvent>,
    pub recorded_at_ms: i64,
    /// What makes a repeat of this (source, id) the same event: its type and
    /// actor (`im.message.send alice`). A repeat whose fingerprint (or
    /// conversation) differs is a different event under a reused identity,
    /// refused as a conflict. Empty for records an older version made.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConversationEffect {
    PutConversation(ConversationRecord),
    AddMember {
        conversation_id: String,
        user_id: String,
        role: Role,
        after_seq: u64,
    },
    RemoveMember {
        conversation_id: String,
        user_id: String,
        after_seq: u64,
    },
    InsertMessage(StoredMessage),
    EditMessage {
        conversation_id: String,
        seq: u64,
        body: Value,
        edited_at: String,
    },
    RecallMessage {
        conversation_id: String,
        seq: u64,
        recalled_at: String,
        recalled_by: String,
    },
    RecordEvent(IdempotencyRecord),
    /// Add (or with `add: false` remove) one user's reaction; idempotent.
    React {
        conversation_id: String,
        seq: u64,
        emoji: String,
        user_id: String,
        add: bool,
    },
    /// `user_id` blocks (or unblocks) `blocked_user_id`; idempotent.
    Block {
        user_id: String,
        blocked_user_id: String,
        blocked: bool,
    },
    /// Raise a member's read and delivered marks (never lowers them).
    Receipt {
        conversation_id: String,
        user_id: String,
        read_seq: u64,
        delivered_seq: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserConversation {
    pub user_id: String,
    pub conversation_id: String,
    pub last_seq: u64,
    pub read_seq: u64,
    /// The conversation's last seq when the user joined.
    pub joined_seq: u64,
    pub diffusion: Diffusion,
    pub muted_until_ms: Option<i64>,
    /// The newest message's preview (sender, kind, body), if any.
    pub last_message: Option<im_events::LastMessage>,
}

impl UserConversation {
    pub fn unread(&self) -> u64 {
        self.last_seq.saturating_sub(self.read_seq)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub user_id: String,
    pub sync_seq: u64,
    pub event_key: String,
    /// The sync item as the gateway sends it (without `sync_seq`).
    pub item: im_events::SyncItem,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserEffect {
    PutUserConversation(UserConversation),
    DeleteUserConversation {
        user_id: String,
        conversation_id: String,
    },
    AppendSync(SyncRecord),
    MarkApplied {
        user_id: String,
        key: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnreadSummary {
    pub items: Vec<UserConversation>,
    pub total_unread: u64,
}

/// Offline-notification state of one user in one conversation, owned by the
/// `offline` function: what was counted (for idempotence) and what waits for
/// its coalescing window to close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyState {
    pub user_id: String,
    pub conversation_id: String,
    /// The user partition (the owner that flushes it).
    pub partition: u32,
    /// Highest conversation seq already counted: a redelivered or replayed
    /// message at or below it changes nothing.
    pub counted_seq: u64,
    /// Messages waiting to be notified; 0 means nothing is pending.
    pub pending: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// A pending message mentions the user (breaks through a group mute).
    pub mentioned: bool,
    /// When the pending notification is due (unix ms).
    pub due_ms: i64,
    /// The newest pending message: sender, kind, body.
    pub last_message: Option<im_events::LastMessage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    /// Waiting to be sent (or re-sent after `next_attempt_ms`).
    Queued,
    /// The provider accepted it.
    Sent,
    /// The provider reported the device token invalid; the token was removed.
    Invalid,
    /// Given up on; a dead letter holds the provider's answer.
    Dead,
    /// Not sent on purpose (muted, read elsewhere); `answer` says why.
    Skipped,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Queued => "queued",
            NotificationStatus::Sent => "sent",
            NotificationStatus::Invalid => "invalid",
            NotificationStatus::Dead => "dead",
            NotificationStatus::Skipped => "skipped",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => NotificationStatus::Queued,
            "sent" => NotificationStatus::Sent,
            "invalid" => NotificationStatus::Invalid,
            "dead" => NotificationStatus::Dead,
            "skipped" => NotificationStatus::Skipped,
            _ => return None,
        })
    }
}

/// One notification to one device, and what became of it: the outbox and
/// the notification log in one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// Deterministic (user, conversation, last seq, device), so a replayed
    /// flush can never enqueue a second copy.
    pub id: String,
    pub user_id: String,
    pub device_id: String,
    pub provider: String,
    pub partition: u32,
    pub conversation_id: String,
    /// What is sent: token, title, body, badge, count, seq range.
    pub payload: Value,
    pub status: NotificationStatus,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The provider's last answer (status and body), or why it was skipped.
    pub answer: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NotifyEffect {
    PutState(NotifyState),
    /// Add to the outbox; a record with the same id already there wins.
    Enqueue(NotificationRecord),
    /// Record a send attempt's outcome.
    Settle {
        id: String,
        status: NotificationStatus,
        attempts: u32,
        next_attempt_ms: i64,
        answer: Option<String>,
        updated_ms: i64,
    },
}

/// How long messages stay hot, and how long they are kept at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TieringPolicy {
    /// Messages older than this move to the cold tier.
    pub hot_window_ms: i64,
    /// Delete direct-conversation messages older than this (None: keep).
    pub retain_direct_ms: Option<i64>,
    /// Delete group messages older than this (None: keep).
    pub retain_group_ms: Option<i64>,
    /// Most messages one cold segment holds.
    pub segment_messages: usize,
    /// Forget idempotency keys older than this (None: keep them forever).
    /// A `(source, id)` repeated after its key is gone is applied as new,
    /// so keep them at least as long as anything may still redeliver or
    /// republish an event: the ingest stream's 30 days by default.
    pub keep_idempotency_ms: Option<i64>,
}

impl Default for TieringPolicy {
    fn default() -> Self {
        TieringPolicy {
            hot_window_ms: 7 * 24 * 3600 * 1000,
            retain_direct_ms: None,
            retain_group_ms: None,
            segment_messages: 256,
            keep_idempotency_ms: Some(30 * 24 * 3600 * 1000),
        }
    }
}

/// What one archiver pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveReport {
    pub conversations: u64,
    pub moved: u64,
    pub segments: u64,
    pub deleted: u64,
    /// Idempotency keys forgotten for their age.
    pub keys_purged: u64,
}

/// Size of each tier, for reporting bytes per message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TierStats {
    pub hot_messages: u64,
    pub hot_bytes: u64,
    pub cold_messages: u64,
    pub cold_bytes: u64,
    pub cold_segments: u64,
}
