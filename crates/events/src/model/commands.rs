//! Inbound commands: each inbound type's data, and [`Command`] over them.

use super::*;

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
