//! What dedupe commits for a conversation, and what fanout hands on to the
//! user-partitioned functions.

use super::*;

/// The committed message: the contract's `im.message.committed` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommittedMessage {
    pub message_id: String,
    pub conversation_id: String,
    pub seq: u64,
    pub sender_id: String,
    pub source: String,
    pub event_id: String,
    pub sent_at: String,
    pub kind: MessageKind,
    pub body: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// How fanout delivers it; decided by dedupe from the member count.
    #[serde(default)]
    pub diffusion: Diffusion,
    /// The seq of the message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEdited {
    /// Members when the edit took effect (decided by dedupe, so replay
    /// delivers to the same people); empty in read diffusion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    pub conversation_id: String,
    pub seq: u64,
    pub message_id: String,
    pub editor_id: String,
    pub body: Value,
    pub edited_at: String,
    pub source: String,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecalled {
    /// Members when the recall took effect; empty in read diffusion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    pub conversation_id: String,
    pub seq: u64,
    pub message_id: String,
    pub actor_id: String,
    pub recalled_at: String,
    pub source: String,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadMarked {
    pub conversation_id: String,
    pub user_id: String,
    pub seq: u64,
    pub source: String,
    pub event_id: String,
    /// The other members told of the mark (a `receipt` pushed to their
    /// online devices); empty in large groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipt_to: Vec<String>,
}

/// A member's devices hold the conversation up to `seq`: the same fields
/// as a read mark, `receipt_to` naming who is told.
pub type DeliveryMarked = ReadMarked;

/// A reaction added to (or taken back from) a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageReacted {
    /// Members when it took effect; empty in read diffusion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    pub conversation_id: String,
    pub seq: u64,
    pub message_id: String,
    pub user_id: String,
    pub emoji: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    pub reacted_at: String,
    pub source: String,
    pub event_id: String,
}

/// A block taken effect (or lifted): the public record; nobody's view
/// changes but dedupe's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserBlocked {
    /// The two users' direct conversation (the block's ordering key).
    pub conversation_id: String,
    pub user_id: String,
    pub blocked_user_id: String,
    pub blocked: bool,
    pub source: String,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationChanged {
    pub conversation_id: String,
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Users who joined; they see messages after `at_seq`.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The conversation's last seq when the change took effect.
    pub at_seq: u64,
    pub diffusion: Diffusion,
    /// The change switched the conversation between write and read
    /// diffusion, so every member's view of it changes.
    #[serde(default)]
    pub mode_changed: bool,
    /// With `mode_changed`: every member after the change, who all need to
    /// learn the new mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    pub source: String,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMuted {
    pub user_id: String,
    pub conversation_id: String,
    /// Unix milliseconds; none unmutes.
    pub until_ms: Option<i64>,
    pub source: String,
    pub event_id: String,
}

/// What dedupe commits for a conversation, on `im.timeline.<p>.<a>.<b>` and
/// republished on `im.events.<a>.<b>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TimelineEvent {
    #[serde(rename = "im.message.committed")]
    Committed(CommittedMessage),
    #[serde(rename = "im.message.edited")]
    Edited(MessageEdited),
    #[serde(rename = "im.message.recalled")]
    Recalled(MessageRecalled),
    #[serde(rename = "im.message.read")]
    Read(ReadMarked),
    #[serde(rename = "im.conversation.changed")]
    Changed(ConversationChanged),
    #[serde(rename = "im.user.muted")]
    Muted(UserMuted),
    #[serde(rename = "im.message.reacted")]
    Reacted(MessageReacted),
    #[serde(rename = "im.user.blocked")]
    Blocked(UserBlocked),
    #[serde(rename = "im.message.delivered")]
    Delivered(DeliveryMarked),
}

impl TimelineEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            TimelineEvent::Committed(_) => "im.message.committed",
            TimelineEvent::Edited(_) => "im.message.edited",
            TimelineEvent::Recalled(_) => "im.message.recalled",
            TimelineEvent::Read(_) => "im.message.read",
            TimelineEvent::Changed(_) => "im.conversation.changed",
            TimelineEvent::Muted(_) => "im.user.muted",
            TimelineEvent::Reacted(_) => "im.message.reacted",
            TimelineEvent::Blocked(_) => "im.user.blocked",
            TimelineEvent::Delivered(_) => "im.message.delivered",
        }
    }

    pub fn conversation_id(&self) -> &str {
        match self {
            TimelineEvent::Committed(m) => &m.conversation_id,
            TimelineEvent::Edited(e) => &e.conversation_id,
            TimelineEvent::Recalled(r) => &r.conversation_id,
            TimelineEvent::Read(r) => &r.conversation_id,
            TimelineEvent::Changed(c) => &c.conversation_id,
            TimelineEvent::Muted(m) => &m.conversation_id,
            TimelineEvent::Reacted(r) => &r.conversation_id,
            TimelineEvent::Blocked(b) => &b.conversation_id,
            TimelineEvent::Delivered(d) => &d.conversation_id,
        }
    }

    /// A key unique to this effect, stable under redelivery and replay.
    pub fn effect_key(&self) -> String {
        match self {
            TimelineEvent::Committed(m) => format!("m:{}:{}", m.conversation_id, m.seq),
            TimelineEvent::Edited(e) => format!("e:{}:{}", e.source, e.event_id),
            TimelineEvent::Recalled(r) => format!("x:{}:{}", r.source, r.event_id),
            TimelineEvent::Read(r) => format!("r:{}:{}", r.source, r.event_id),
            TimelineEvent::Changed(c) => format!("c:{}:{}", c.source, c.event_id),
            TimelineEvent::Muted(m) => format!("u:{}:{}", m.source, m.event_id),
            TimelineEvent::Reacted(r) => format!("a:{}:{}", r.source, r.event_id),
            TimelineEvent::Blocked(b) => format!("b:{}:{}", b.source, b.event_id),
            TimelineEvent::Delivered(d) => format!("d:{}:{}", d.source, d.event_id),
        }
    }
}

pub type Timeline = Envelope<TimelineEvent>;

/// One timeline event for the listed recipients, all in one user partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryData {
    pub users: Vec<String>,
    pub event: TimelineEvent,
    /// The trace of the event that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::Trace>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
// Almost every value is the large variant; boxing it would cost an
// allocation per delivery to save space on rare materialize requests.
#[allow(clippy::large_enum_variant)]
pub enum DeliveryPayload {
    #[serde(rename = "im.delivery")]
    Delivery(DeliveryData),
    /// Several timeline events for one user partition, in stream order:
    /// fanout writes one per partition per batch, so a stream write carries
    /// many messages.
    #[serde(rename = "im.deliveries")]
    Deliveries(Vec<DeliveryData>),
    /// A device of this user is about to sync: copy the messages of the
    /// user's read-diffusion conversations it has not seen yet into its sync
    /// log, in order with everything else the unread owner applies.
    #[serde(rename = "im.sync.materialize")]
    Materialize(MaterializeRequest),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterializeRequest {
    pub user_id: String,
}

pub type Delivery = Envelope<DeliveryPayload>;

impl DeliveryPayload {
    /// The timeline events it carries, in order (none for a materialize
    /// request).
    pub fn into_data(self) -> Vec<DeliveryData> {
        match self {
            DeliveryPayload::Delivery(data) => vec![data],
            DeliveryPayload::Deliveries(list) => list,
            DeliveryPayload::Materialize(_) => vec![],
        }
    }
}
