//! The typed events of the pipeline.
//!
//! [`Command`] is an inbound event's type and data; [`TimelineEvent`] is what
//! `dedupe` commits for a conversation; [`Delivery`] is what `fanout` hands to
//! the user-partitioned functions. All three travel inside a structured
//! CloudEvent ([`Envelope`]), so every stream holds CloudEvents.

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod commands;
mod envelope_de;
mod timeline;
pub use commands::*;
pub use timeline::*;

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

/// A structured CloudEvent carrying `T` (whose serde form supplies `type`
/// and `data`). Read by hand ([`envelope_de`]), not derived.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
