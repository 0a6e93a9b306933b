//! What a device is told: the items of a user's sync log, and the notices
//! that push them to online devices.
//!
//! A sync item is `{"type": "message" | "edit" | "recall" | "read" |
//! "reaction", …}` in the log (the gateway adds `sync_seq` when it answers a
//! `sync`); pushed, it becomes a frame whose `op` names it ([`SyncItem::op`]).
//! A `receipt` is never in the log: it is only pushed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{CommittedMessage, MessageEdited, MessageReacted, MessageRecalled, Trace};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SyncItem {
    Message(SyncMessage),
    Edit(MessageEdited),
    Recall(MessageRecalled),
    Read(ReadItem),
    Reaction(MessageReacted),
    Receipt(ReceiptItem),
}

/// A message in a sync log: the committed message, and for one copied into
/// the log later (read diffusion), what happened to it since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncMessage {
    #[serde(flatten)]
    pub message: CommittedMessage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalled_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalled_by: Option<String>,
}

/// The user read the conversation up to `seq` (on any of their devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadItem {
    pub conversation_id: String,
    pub seq: u64,
}

/// Another member read or received the conversation up to a seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptItem {
    pub conversation_id: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_seq: Option<u64>,
}

impl From<CommittedMessage> for SyncItem {
    fn from(message: CommittedMessage) -> Self {
        SyncItem::Message(SyncMessage {
            message,
            edited_at: None,
            recalled_at: None,
            recalled_by: None,
        })
    }
}

impl SyncItem {
    /// The `op` of the frame that pushes it.
    pub fn op(&self) -> &'static str {
        match self {
            SyncItem::Message(_) => "message",
            SyncItem::Edit(_) => "edited",
            SyncItem::Recall(_) => "recalled",
            SyncItem::Read(_) => "read",
            SyncItem::Reaction(_) => "reacted",
            SyncItem::Receipt(_) => "receipt",
        }
    }

    pub fn conversation_id(&self) -> &str {
        match self {
            SyncItem::Message(m) => &m.message.conversation_id,
            SyncItem::Edit(e) => &e.conversation_id,
            SyncItem::Recall(r) => &r.conversation_id,
            SyncItem::Read(r) => &r.conversation_id,
            SyncItem::Reaction(r) => &r.conversation_id,
            SyncItem::Receipt(r) => &r.conversation_id,
        }
    }

    /// The message seq it is about (a read mark's seq; none for a receipt).
    pub fn seq(&self) -> Option<u64> {
        match self {
            SyncItem::Message(m) => Some(m.message.seq),
            SyncItem::Edit(e) => Some(e.seq),
            SyncItem::Recall(r) => Some(r.seq),
            SyncItem::Read(r) => Some(r.seq),
            SyncItem::Reaction(r) => Some(r.seq),
            SyncItem::Receipt(_) => None,
        }
    }

    /// The message, if it is one.
    pub fn message(&self) -> Option<&CommittedMessage> {
        match self {
            SyncItem::Message(m) => Some(&m.message),
            _ => None,
        }
    }

    /// The item as `sync` answers it, with its `sync_seq`: JSON text,
    /// written once (no `Value` tree in between).
    pub fn logged(&self, sync_seq: u64) -> String {
        #[derive(Serialize)]
        struct Logged<'a> {
            #[serde(flatten)]
            item: &'a SyncItem,
            sync_seq: u64,
        }
        serde_json::to_string(&Logged {
            item: self,
            sync_seq,
        })
        .expect("a sync item is plain data")
    }

    /// The frame a device gets when it is pushed: the item's fields under
    /// its `op`, without the recipients list; `sync_seq` once the item is in
    /// the log (none on the fast path, pushed from the commit).
    pub fn frame(&self, sync_seq: Option<u64>) -> Value {
        let mut frame = serde_json::to_value(self).expect("a sync item is plain data");
        if let Some(object) = frame.as_object_mut() {
            object.remove("type");
            object.remove("recipients");
            object.insert("op".into(), self.op().into());
            if let Some(sync_seq) = sync_seq {
                object.insert("sync_seq".into(), sync_seq.into());
            }
        }
        frame
    }
}

/// A conversation's last message as a conversation list shows it, and as a
/// notification previews it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastMessage {
    /// Absent in previews stored by earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub sender_id: String,
    pub kind: crate::MessageKind,
    pub body: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
}

impl From<&CommittedMessage> for LastMessage {
    fn from(message: &CommittedMessage) -> Self {
        LastMessage {
            seq: Some(message.seq),
            sender_id: message.sender_id.clone(),
            kind: message.kind,
            body: message.body.clone(),
            sent_at: Some(message.sent_at.clone()),
        }
    }
}

/// One item for one user's online devices, from unread (with the item's
/// `sync_seq`) or from dedupe's fast path (without), on a user partition's
/// push subject; a batch of them travels as a JSON array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushNotice {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_seq: Option<u64>,
    pub item: SyncItem,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
    /// Set by unread on the last notice of a (user, conversation) in a
    /// batch: it counted the conversation after its commit, and `unread`
    /// is what the user's devices are told (None: the count did not change,
    /// so no `unread` frame). Unset, from an older unread, push reads the
    /// counts itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<UnreadCounts>,
}

/// A user's unread counts as one conversation changed them: that
/// conversation's, the total over all, and the user's last `sync_seq`
/// when they were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadCounts {
    pub unread: u64,
    pub total: u64,
    /// The user's last sync_seq, read before the counts: they reflect at
    /// least everything up to it, so of two unread frames the one with the
    /// higher `as_of` is never the older state a device should keep.
    pub as_of: u64,
}

impl UnreadCounts {
    /// The `unread` frame for `conversation_id`.
    pub fn frame(&self, conversation_id: &str) -> Value {
        serde_json::json!({"op": "unread", "conversation_id": conversation_id, "unread": self.unread,
                           "total": self.total, "as_of": self.as_of})
    }
}

#[cfg(test)]
mod tests;
