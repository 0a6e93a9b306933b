//! The typed events of the pipeline.
//!
//! [`Command`] is an inbound event's type and data; [`TimelineEvent`] is what
//! `dedupe` commits for a conversation; [`Delivery`] is what `fanout` hands to
//! the user-partitioned functions. All three travel inside a structured
//! CloudEvent ([`Envelope`]), so every stream holds CloudEvents.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SPEC_VERSION: &str = "1.0";
pub const JSON: &str = "application/json";
/// CloudEvents `source` of events the pipeline itself produces.
pub const PIPELINE_SOURCE: &str = "urn:im:pipeline";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    Text,
    Image,
    File,
    Custom,
}

/// What a member added later may read: messages from the seq at which they
/// joined (`joined`, the default), or the whole history (`shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryVisibility {
    #[default]
    Joined,
    Shared,
}

impl HistoryVisibility {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryVisibility::Joined => "joined",
            HistoryVisibility::Shared => "shared",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "joined" => Some(HistoryVisibility::Joined),
            "shared" => Some(HistoryVisibility::Shared),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    Direct,
    Group,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "direct" => Some(ConversationKind::Direct),
            "group" => Some(ConversationKind::Group),
            _ => None,
        }
    }
}

/// How a conversation's messages reach members: per-member copies, or members
/// pull the conversation timeline (large groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Diffusion {
    #[default]
    Write,
    Read,
}

impl Diffusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Diffusion::Write => "write",
            Diffusion::Read => "read",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "write" => Some(Diffusion::Write),
            "read" => Some(Diffusion::Read),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendData {
    pub conversation_id: String,
    pub sender_id: String,
    pub kind: MessageKind,
    pub body: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// The seq of the message (of the same conversation) this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadData {
    pub conversation_id: String,
    pub user_id: String,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateData {
    pub conversation_id: String,
    pub kind: ConversationKind,
    pub members: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Group admins (may recall any message at any time). An extension of the
    /// contract's data; absent means no admins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<String>,
    /// What members added later may read (default `joined`).
    #[serde(default)]
    pub history_visibility: HistoryVisibility,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersData {
    pub conversation_id: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuteData {
    pub user_id: String,
    pub conversation_id: String,
    /// RFC 3339, or null to unmute.
    pub until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditData {
    pub conversation_id: String,
    pub seq: u64,
    pub editor_id: String,
    pub body: Value,
}

/// A reaction added, or with `remove` taken back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactData {
    pub conversation_id: String,
    pub seq: u64,
    pub user_id: String,
    pub emoji: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
}

/// `user_id` blocks (or unblocks) `blocked_user_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockData {
    pub user_id: String,
    pub blocked_user_id: String,
}

/// A device of `user_id` holds the conversation's messages up to `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveredData {
    pub conversation_id: String,
    pub user_id: String,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecallData {
    pub conversation_id: String,
    pub seq: u64,
    pub actor_id: String,
}

/// An inbound event's type and data. The serde tags are the contract's type
/// names, so `{"type": …, "data": …}` maps onto this directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Command {
    #[serde(rename = "im.message.send")]
    Send(SendData),
    #[serde(rename = "im.message.read")]
    Read(ReadData),
    #[serde(rename = "im.conversation.create")]
    Create(CreateData),
    #[serde(rename = "im.conversation.members.add")]
    AddMembers(MembersData),
    #[serde(rename = "im.conversation.members.remove")]
    RemoveMembers(MembersData),
    #[serde(rename = "im.user.mute")]
    Mute(MuteData),
    #[serde(rename = "im.message.edit")]
    Edit(EditData),
    #[serde(rename = "im.message.recall")]
    Recall(RecallData),
    #[serde(rename = "im.message.react")]
    React(ReactData),
    #[serde(rename = "im.user.block")]
    Block(BlockData),
    #[serde(rename = "im.user.unblock")]
    Unblock(BlockData),
    #[serde(rename = "im.message.delivered")]
    Delivered(DeliveredData),
}

/// Every inbound type of the contract.
pub const INBOUND_TYPES: [&str; 12] = [
    "im.message.send",
    "im.message.read",
    "im.conversation.create",
    "im.conversation.members.add",
    "im.conversation.members.remove",
    "im.user.mute",
    "im.message.edit",
    "im.message.recall",
    "im.message.react",
    "im.user.block",
    "im.user.unblock",
    "im.message.delivered",
];

impl Command {
    pub fn type_name(&self) -> &'static str {
        match self {
            Command::Send(_) => "im.message.send",
            Command::Read(_) => "im.message.read",
            Command::Create(_) => "im.conversation.create",
            Command::AddMembers(_) => "im.conversation.members.add",
            Command::RemoveMembers(_) => "im.conversation.members.remove",
            Command::Mute(_) => "im.user.mute",
            Command::Edit(_) => "im.message.edit",
            Command::Recall(_) => "im.message.recall",
            Command::React(_) => "im.message.react",
            Command::Block(_) => "im.user.block",
            Command::Unblock(_) => "im.user.unblock",
            Command::Delivered(_) => "im.message.delivered",
        }
    }

    /// The conversation the event is about: the key that orders it. A
    /// block is about the two users' direct conversation, so it is ordered
    /// with the direct messages it refuses (and replay decides them alike).
    pub fn conversation_id(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            Command::Send(d) => Cow::Borrowed(&d.conversation_id),
            Command::Read(d) => Cow::Borrowed(&d.conversation_id),
            Command::Create(d) => Cow::Borrowed(&d.conversation_id),
            Command::AddMembers(d) | Command::RemoveMembers(d) => Cow::Borrowed(&d.conversation_id),
            Command::Mute(d) => Cow::Borrowed(&d.conversation_id),
            Command::Edit(d) => Cow::Borrowed(&d.conversation_id),
            Command::Recall(d) => Cow::Borrowed(&d.conversation_id),
            Command::React(d) => Cow::Borrowed(&d.conversation_id),
            Command::Delivered(d) => Cow::Borrowed(&d.conversation_id),
            Command::Block(d) | Command::Unblock(d) => Cow::Owned(
                crate::ids::direct_conversation_id(&d.user_id, &d.blocked_user_id),
            ),
        }
    }

    /// The user on whose behalf the event acts, where it names one.
    /// What identifies an event besides its (source, id) and conversation:
    /// its type and actor (`im.message.send alice`). Two events under one
    /// (source, id) with different fingerprints are different events.
    pub fn fingerprint(&self) -> String {
        format!("{} {}", self.type_name(), self.actor().unwrap_or("-"))
    }

    pub fn actor(&self) -> Option<&str> {
        match self {
            Command::Send(d) => Some(&d.sender_id),
            Command::Read(d) => Some(&d.user_id),
            Command::Mute(d) => Some(&d.user_id),
            Command::Edit(d) => Some(&d.editor_id),
            Command::Recall(d) => Some(&d.actor_id),
            Command::React(d) => Some(&d.user_id),
            Command::Block(d) | Command::Unblock(d) => Some(&d.user_id),
            Command::Delivered(d) => Some(&d.user_id),
            Command::Create(_) | Command::AddMembers(_) | Command::RemoveMembers(_) => None,
        }
    }
}

/// A structured CloudEvent carrying `T` (whose serde form supplies `type`
/// and `data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub specversion: String,
    pub id: String,
    pub source: String,
    pub time: String,
    pub datacontenttype: String,
    /// Extension: when the pipeline first stored the event (RFC 3339), taken
    /// from JetStream so that replay reproduces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imreceived: Option<String>,
    /// Extension (distributed tracing): the W3C trace context of the span
    /// that caused the event ([`crate::Trace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    #[serde(flatten)]
    pub payload: T,
}

impl<T> Envelope<T> {
    pub fn new(
        source: impl Into<String>,
        id: impl Into<String>,
        time: impl Into<String>,
        payload: T,
    ) -> Self {
        Envelope {
            specversion: SPEC_VERSION.to_string(),
            id: id.into(),
            source: source.into(),
            time: time.into(),
            datacontenttype: JSON.to_string(),
            imreceived: None,
            traceparent: None,
            tracestate: None,
            payload,
        }
    }

    /// The trace the event belongs to, if it carries one.
    pub fn trace(&self) -> Option<crate::Trace> {
        self.traceparent.as_ref().map(|traceparent| crate::Trace {
            traceparent: traceparent.clone(),
            tracestate: self.tracestate.clone(),
        })
    }

    /// The event as part of `trace` (none: of no trace).
    pub fn with_trace(mut self, trace: Option<crate::Trace>) -> Self {
        (self.traceparent, self.tracestate) = match trace {
            Some(trace) => (Some(trace.traceparent), trace.tracestate),
            None => (None, None),
        };
        self
    }
}

/// A validated, normalized inbound event on `im.accepted.<p>.<type>`; `id`
/// and `source` are the publisher's.
pub type Accepted = Envelope<Command>;

/// What a committed send's ack names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedRef {
    pub message_id: String,
    pub conversation_id: String,
    pub seq: u64,
}

/// The pipeline's answer to a publisher waiting on an event (the gateway,
/// through `Im-Reply-To`): sent only once the event's effects are durable,
/// or when it is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub ok: bool,
    /// A committed send: what its ack names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<CommittedRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Verdict {
    /// Applied; nothing to name (a read, an edit, a membership change).
    pub fn applied() -> Self {
        Verdict {
            ok: true,
            message: None,
            code: None,
            reason: None,
        }
    }

    pub fn committed(message_id: &str, conversation_id: &str, seq: u64) -> Self {
        Verdict {
            message: Some(CommittedRef {
                message_id: message_id.to_string(),
                conversation_id: conversation_id.to_string(),
                seq,
            }),
            ..Verdict::applied()
        }
    }

    pub fn refused(error: &crate::EventError) -> Self {
        Verdict {
            ok: false,
            message: None,
            code: Some(error.code.as_str().to_string()),
            reason: Some(error.reason.clone()),
        }
    }
}

/// One accepted event and the subject its publisher waits on for the
/// verdict (the gateway's `Im-Reply-To`), if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptedItem {
    pub event: Accepted,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// What ingest forwards to one conversation partition per batch, on
/// `im.accepted.<p>.batch`: the accepted events in stream order. One stream
/// write (one fsync) carries a whole batch instead of one per event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptedBatch {
    pub events: Vec<AcceptedItem>,
}

/// What dedupe commits for one conversation partition per batch, on
/// `im.timeline.<p>.batch`, in order. Each event is also published alone on
/// the public `im.events.<type>` subjects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineBatch {
    pub events: Vec<Timeline>,
}

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

/// The contract's `im.message.rejected` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub source: String,
    pub event_id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    pub code: String,
    pub reason: String,
    pub function: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RejectedPayload {
    #[serde(rename = "im.message.rejected")]
    Rejected(Rejected),
}

/// Deterministic message id from the event identity `(source, id)`, so that
/// replay reproduces the same ids (UUID v5 in a namespace of our own).
pub fn message_id_for(source: &str, event_id: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5d8c_6a41_2f0e_4c1b_9a67_0d1e_22f4_8b31);
    let mut name = Vec::with_capacity(source.len() + event_id.len() + 1);
    name.extend_from_slice(source.as_bytes());
    name.push(0);
    name.extend_from_slice(event_id.as_bytes());
    uuid::Uuid::new_v5(&NAMESPACE, &name).to_string()
}

/// Unix milliseconds as RFC 3339 with millisecond precision, UTC.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(unix_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests;
