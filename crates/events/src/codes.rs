//! Error codes shared by every function, the dead-letter stream and
//! `im.message.rejected` events.

use serde::{Deserialize, Serialize};

/// Why an event was refused. The string form is the stable `code` clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotJson,
    NotCloudevent,
    BadSpecversion,
    UnknownType,
    SchemaViolation,
    TooLarge,
    InvalidId,
    NotMember,
    Forbidden,
    NotFound,
    ReadBeyondLastSeq,
    RecallWindowExpired,
    Conflict,
    MaxDeliveries,
    /// A push provider refused a notification or kept failing.
    ProviderFailed,
    /// The recipient of a direct message blocks its sender.
    Blocked,
    /// A reaction that is not one emoji or `:shortcode:`.
    InvalidEmoji,
    /// `reply_to` names no message of the conversation.
    InvalidReply,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotJson => "not_json",
            ErrorCode::NotCloudevent => "not_cloudevent",
            ErrorCode::BadSpecversion => "bad_specversion",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::SchemaViolation => "schema_violation",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::NotMember => "not_member",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ReadBeyondLastSeq => "read_beyond_last_seq",
            ErrorCode::RecallWindowExpired => "recall_window_expired",
            ErrorCode::Conflict => "conflict",
            ErrorCode::MaxDeliveries => "max_deliveries",
            ErrorCode::ProviderFailed => "provider_failed",
            ErrorCode::Blocked => "blocked",
            ErrorCode::InvalidEmoji => "invalid_emoji",
            ErrorCode::InvalidReply => "invalid_reply",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permanent refusal of one event: it goes to dead letters with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct EventError {
    pub code: ErrorCode,
    pub reason: String,
}

impl EventError {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        EventError {
            code,
            reason: reason.into(),
        }
    }
}
