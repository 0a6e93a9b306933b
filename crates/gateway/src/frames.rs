//! WebSocket frames of the contract: parsing client frames (pure) and
//! building server frames.

use im_events::MessageKind;
use serde::Deserialize;
use serde_json::{json, Value};

/// A client frame. Its `op`s ([`OPS`], [`ClientFrame::op`]) are the serde
/// tags, derived from the variants like serde's (`rename_all`, checked by
/// the frame tests: every op in `OPS` parses as itself).
#[derive(Debug, Clone, PartialEq, Deserialize, strum::VariantNames, strum::IntoStaticStr)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
#[strum(serialize_all = "snake_case")]
pub enum ClientFrame {
    Send {
        conversation_id: String,
        client_msg_id: String,
        kind: MessageKind,
        body: Value,
        #[serde(default)]
        mentions: Vec<String>,
        /// The seq of the message (of this conversation) it answers.
        #[serde(default)]
        reply_to: Option<u64>,
    },
    Sync {
        #[serde(default)]
        after: u64,
        #[serde(default)]
        limit: Option<usize>,
    },
    History {
        conversation_id: String,
        #[serde(default)]
        before_seq: Option<u64>,
        #[serde(default)]
        limit: Option<usize>,
    },
    Read {
        conversation_id: String,
        seq: u64,
    },
    Conversations {},
    Ping {},
    Edit {
        conversation_id: String,
        seq: u64,
        body: Value,
    },
    Recall {
        conversation_id: String,
        seq: u64,
    },
    Typing {
        conversation_id: String,
    },
    Delivered {
        sync_seq: u64,
    },
    /// This device's push token, for notifications while it is offline.
    RegisterPush {
        provider: String,
        token: String,
    },
    UnregisterPush {},
    /// A fresh token for this session, before the current one expires.
    Auth {
        token: String,
    },
    /// Mute the conversation until a time (RFC 3339), or unmute (null).
    Mute {
        conversation_id: String,
        #[serde(default)]
        until: Option<String>,
    },
    React {
        conversation_id: String,
        seq: u64,
        emoji: String,
    },
    Unreact {
        conversation_id: String,
        seq: u64,
        emoji: String,
    },
    /// Refuse direct messages from this user.
    Block {
        user_id: String,
    },
    Unblock {
        user_id: String,
    },
    /// Every member's read and delivered marks (counts in large groups).
    Receipts {
        conversation_id: String,
    },
    /// Whether these users are online, and when they were last seen.
    Presence {
        users: Vec<String>,
    },
    /// The same, and pushed `presence` frames when it changes.
    PresenceSubscribe {
        users: Vec<String>,
    },
    PresenceUnsubscribe {
        users: Vec<String>,
    },
}

/// Users one presence frame may name, and one connection follow.
pub const MAX_PRESENCE_USERS: usize = 200;

/// Every op a client may send.
pub const OPS: &[&str] = <ClientFrame as strum::VariantNames>::VARIANTS;

/// Every op the server sends (the gateway's answers and pushes, and the
/// push function's frames); `schemas/asyncapi.yaml` describes each.
pub const SERVER_OPS: [&str; 24] = [
    "ack",
    "message",
    "sync_result",
    "history_result",
    "unread",
    "conversations_result",
    "pong",
    "edited",
    "recalled",
    "read",
    "typing",
    "push_registered",
    "push_unregistered",
    "authenticated",
    "muted",
    "reacted",
    "receipt",
    "receipts_result",
    "presence_result",
    "presence",
    "presence_unsubscribed",
    "blocked",
    "unblocked",
    "error",
];

impl ClientFrame {
    /// Its `op` (a metric label: one of [`OPS`]).
    pub fn op(&self) -> &'static str {
        self.into()
    }

    /// Frames that change state or reach other users: they share the
    /// user's write limit. Reads of one's own state do not. (A presence
    /// question counts: it reads up to 200 other users' lists.)
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            ClientFrame::Sync { .. }
                | ClientFrame::History { .. }
                | ClientFrame::Conversations {}
                | ClientFrame::Ping {}
                | ClientFrame::Auth { .. }
                | ClientFrame::Receipts { .. }
                | ClientFrame::PresenceUnsubscribe { .. }
        )
    }

    pub fn client_msg_id(&self) -> Option<&str> {
        match self {
            ClientFrame::Send { client_msg_id, .. } => Some(client_msg_id),
            _ => None,
        }
    }
}

/// A refused frame: becomes an `error` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
    pub client_msg_id: Option<String>,
}

impl FrameError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
            client_msg_id: None,
        }
    }

    pub fn to_frame(&self) -> Value {
        let mut frame = json!({"op": "error", "code": self.code, "message": self.message});
        if let Some(id) = &self.client_msg_id {
            frame["client_msg_id"] = json!(id);
        }
        frame
    }
}

pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|error| FrameError::new("bad_json", format!("frame is not JSON: {error}")))?;
    let client_msg_id = value
        .get("client_msg_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let op = match value.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(_) => return Err(FrameError::new("bad_frame", "op must be a string")),
        None => return Err(FrameError::new("bad_frame", "frame has no op")),
    };
    if !OPS.contains(&op.as_str()) {
        return Err(FrameError {
            code: "unknown_op",
            message: format!("unknown op {op:?}; expected one of {}", OPS.join(", ")),
            client_msg_id,
        });
    }
    let frame: ClientFrame = serde_json::from_value(value).map_err(|error| FrameError {
        code: "bad_frame",
        message: format!("{op}: {error}"),
        client_msg_id: client_msg_id.clone(),
    })?;
    check_ids(&frame).map_err(|message| FrameError {
        code: "bad_frame",
        message,
        client_msg_id,
    })?;
    Ok(frame)
}

fn check_ids(frame: &ClientFrame) -> Result<(), String> {
    let users: &[String] = match frame {
        ClientFrame::Block { user_id } | ClientFrame::Unblock { user_id } => {
            std::slice::from_ref(user_id)
        }
        ClientFrame::Presence { users }
        | ClientFrame::PresenceSubscribe { users }
        | ClientFrame::PresenceUnsubscribe { users } => {
            if users.is_empty() || users.len() > MAX_PRESENCE_USERS {
                return Err(format!("users must name 1 to {MAX_PRESENCE_USERS} users"));
            }
            users
        }
        _ => &[],
    };
    if let Some(bad) = users.iter().find(|u| !im_events::ids::is_valid_id(u)) {
        return Err(format!("user id {bad:?} is not a valid id"));
    }
    let conversation = match frame {
        ClientFrame::Send {
            conversation_id,
            client_msg_id,
            ..
        } => {
            if !im_events::ids::is_valid_id(client_msg_id) {
                return Err("client_msg_id must be 1-128 bytes of [A-Za-z0-9._:@-]".into());
            }
            Some(conversation_id)
        }
        ClientFrame::History {
            conversation_id, ..
        }
        | ClientFrame::Read {
            conversation_id, ..
        }
        | ClientFrame::Edit {
            conversation_id, ..
        }
        | ClientFrame::Recall {
            conversation_id, ..
        }
        | ClientFrame::Typing { conversation_id }
        | ClientFrame::Mute {
            conversation_id, ..
        }
        | ClientFrame::React {
            conversation_id, ..
        }
        | ClientFrame::Unreact {
            conversation_id, ..
        }
        | ClientFrame::Receipts { conversation_id } => Some(conversation_id),
        _ => None,
    };
    match conversation {
        Some(id) if !im_events::ids::is_valid_id(id) => {
            Err(format!("conversation_id {id:?} is not a valid id"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

/// A frame push published for a device of this gateway, as it goes to the
/// socket: the text it came as (not parsed into a tree and written again),
/// and, for a message, the device that sent it (not echoed back there).
#[derive(Debug, PartialEq)]
pub struct Pushed {
    pub text: String,
    pub origin: Option<String>,
}

/// Read what the gateway needs of a pushed frame. `None` for a payload
/// that is not a JSON object with an `op` (only push may publish here, so
/// that is a bug elsewhere, not a frame to forward).
pub fn pushed(payload: &[u8]) -> Option<Pushed> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        op: std::borrow::Cow<'a, str>,
        #[serde(default, borrow)]
        source: Option<std::borrow::Cow<'a, str>>,
    }
    let text = std::str::from_utf8(payload).ok()?;
    let head: Head = serde_json::from_str(text).ok()?;
    let origin = match (head.op.as_ref(), head.source) {
        ("message", Some(source)) => Some(source.into_owned()),
        _ => None,
    };
    Some(Pushed {
        text: text.to_string(),
        origin,
    })
}
