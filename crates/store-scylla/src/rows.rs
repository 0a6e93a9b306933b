//! Rows ↔ the store's types, and bound values (pure).

use im_events::{ConversationKind, Diffusion, MessageKind};
use im_store::{
    ConversationRecord, NotificationRecord, NotificationStatus, NotifyState, StoreError,
    StoreResult, StoredMessage, SyncRecord, UserConversation,
};
use scylla::value::CqlValue;
use serde_json::Value;

use crate::buckets::message_bucket;

/// Values bound to one statement (NULL is `None`).
pub type Values = Vec<Option<CqlValue>>;

pub fn text(value: impl Into<String>) -> Option<CqlValue> {
    Some(CqlValue::Text(value.into()))
}

pub fn big(value: impl TryInto<i64>) -> Option<CqlValue> {
    Some(CqlValue::BigInt(value.try_into().unwrap_or(i64::MAX)))
}

pub fn int(value: u32) -> Option<CqlValue> {
    Some(CqlValue::Int(value as i32))
}

pub fn opt_text(value: &Option<String>) -> Option<CqlValue> {
    value.as_ref().map(|v| CqlValue::Text(v.clone()))
}

fn bad(what: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("stored {what} {value:?} is not readable"))
}

pub const MESSAGE_COLUMNS: &str = "conversation_id, bucket, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to";

pub type MessageRow = (
    String,
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<Vec<String>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

pub fn kind_str(kind: MessageKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn message_values(m: &StoredMessage) -> Values {
    vec![
        text(&m.conversation_id),
        big(message_bucket(m.seq)),
        big(m.seq),
        text(&m.message_id),
        text(&m.sender_id),
        text(&m.source),
        text(&m.event_id),
        text(&m.sent_at),
        text(kind_str(m.kind)),
        text(m.body.to_string()),
        Some(CqlValue::List(
            m.mentions
                .iter()
                .map(|u| CqlValue::Text(u.clone()))
                .collect(),
        )),
        opt_text(&m.edited_at),
        opt_text(&m.recalled_at),
        opt_text(&m.recalled_by),
        m.reply_to.map(|seq| CqlValue::BigInt(seq as i64)),
    ]
}

pub fn message_from_row(row: MessageRow) -> Result<StoredMessage, StoreError> {
    let (
        conversation_id,
        _bucket,
        seq,
        message_id,
        sender_id,
        source,
        event_id,
        sent_at,
        kind,
        body,
        mentions,
        edited_at,
        recalled_at,
        recalled_by,
        reply_to,
    ) = row;
    Ok(StoredMessage {
        conversation_id,
        seq: seq as u64,
        message_id,
        sender_id,
        source,
        event_id,
        sent_at,
        kind: serde_json::from_value(Value::String(kind.clone()))
            .map_err(|_| bad("message kind", &kind))?,
        body: serde_json::from_str(&body).map_err(|_| bad("message body", &body))?,
        mentions: mentions.unwrap_or_default(),
        edited_at,
        recalled_at,
        recalled_by,
        reply_to: reply_to.map(|seq| seq as u64),
        reactions: vec![],
    })
}

pub const CONVERSATION_COLUMNS: &str =
    "conversation_id, kind, title, last_seq, diffusion, member_count, created_at, history_visibility";
pub type ConversationRow = (
    String,
    String,
    Option<String>,
    i64,
    String,
    i64,
    String,
    Option<String>,
);

pub fn conversation_from_row(row: ConversationRow) -> Result<ConversationRecord, StoreError> {
    let (conversation_id, kind, title, last_seq, diffusion, member_count, created_at, visibility) =
        row;
    let visibility = visibility.unwrap_or_else(|| "joined".to_string());
    Ok(ConversationRecord {
        history_visibility: im_events::HistoryVisibility::parse(&visibility)
            .ok_or_else(|| bad("history visibility", &visibility))?,
        conversation_id,
        kind: ConversationKind::parse(&kind).ok_or_else(|| bad("conversation kind", &kind))?,
        title,
        last_seq: last_seq as u64,
        diffusion: Diffusion::parse(&diffusion).ok_or_else(|| bad("diffusion", &diffusion))?,
        member_count: member_count as u64,
        created_at,
    })
}

pub fn conversation_values(c: &ConversationRecord, last_seq: u64) -> Values {
    vec![
        text(&c.conversation_id),
        text(c.kind.as_str()),
        opt_text(&c.title),
        big(last_seq),
        text(c.diffusion.as_str()),
        big(c.member_count),
        text(&c.created_at),
        text(c.history_visibility.as_str()),
    ]
}

pub const USER_CONVERSATION_COLUMNS: &str = "user_id, conversation_id, last_seq, read_seq, joined_seq, diffusion, muted_until_ms, last_message";
pub type UserConversationRow = (
    String,
    String,
    i64,
    i64,
    i64,
    String,
    Option<i64>,
    Option<String>,
);

pub fn user_conversation_from_row(
    row: UserConversationRow,
) -> Result<UserConversation, StoreError> {
    let (
        user_id,
        conversation_id,
        last_seq,
        read_seq,
        joined_seq,
        diffusion,
        muted_until_ms,
        last_message,
    ) = row;
    Ok(UserConversation {
        user_id,
        conversation_id,
        last_seq: last_seq as u64,
        read_seq: read_seq as u64,
        joined_seq: joined_seq as u64,
        diffusion: Diffusion::parse(&diffusion).ok_or_else(|| bad("diffusion", &diffusion))?,
        muted_until_ms,
        last_message: im_store::parse_last_message(last_message.as_deref())
            .map_err(StoreError::Backend)?,
    })
}

pub fn user_conversation_values(row: &UserConversation) -> Values {
    vec![
        text(&row.user_id),
        text(&row.conversation_id),
        big(row.last_seq),
        big(row.read_seq),
        big(row.joined_seq),
        text(row.diffusion.as_str()),
        row.muted_until_ms.map(CqlValue::BigInt),
        row.last_message
            .as_ref()
            .map(|v| CqlValue::Text(serde_json::to_string(v).expect("JSON data serializes"))),
    ]
}

pub type SyncRow = (String, i64, String, String);

pub fn sync_from_row(row: SyncRow) -> StoreResult<SyncRecord> {
    let (user_id, sync_seq, event_key, item) = row;
    let item = serde_json::from_str(&item).map_err(|error| {
        StoreError::Backend(format!(
            "sync item {sync_seq} of {user_id} is unreadable ({error}): the log was written by another version; rebuild it with `imctl replay`"
        ))
    })?;
    Ok(SyncRecord {
        user_id,
        sync_seq: sync_seq as u64,
        event_key,
        item,
    })
}

pub const NOTIFY_STATE_COLUMNS: &str = "user_id, conversation_id, partition, counted_seq, pending, first_seq, last_seq, mentioned, due_ms, last_message";
pub type NotifyStateRow = (
    String,
    String,
    i32,
    i64,
    i64,
    i64,
    i64,
    bool,
    i64,
    Option<String>,
);

pub fn notify_state_from_row(row: NotifyStateRow) -> StoreResult<NotifyState> {
    let (
        user_id,
        conversation_id,
        partition,
        counted_seq,
        pending,
        first_seq,
        last_seq,
        mentioned,
        due_ms,
        last_message,
    ) = row;
    Ok(NotifyState {
        user_id,
        conversation_id,
        partition: partition as u32,
        counted_seq: counted_seq as u64,
        pending: pending as u64,
        first_seq: first_seq as u64,
        last_seq: last_seq as u64,
        mentioned,
        due_ms,
        last_message: im_store::parse_last_message(last_message.as_deref())
            .map_err(StoreError::Backend)?,
    })
}

pub fn notify_state_values(s: &NotifyState) -> Values {
    vec![
        text(&s.user_id),
        text(&s.conversation_id),
        int(s.partition),
        big(s.counted_seq),
        big(s.pending),
        big(s.first_seq),
        big(s.last_seq),
        Some(CqlValue::Boolean(s.mentioned)),
        big(s.due_ms),
        s.last_message
            .as_ref()
            .map(|v| CqlValue::Text(serde_json::to_string(v).expect("JSON data serializes"))),
    ]
}

pub const NOTIFICATION_COLUMNS: &str = "id, user_id, device_id, provider, partition, conversation_id, payload, status, attempts, next_attempt_ms, created_ms, updated_ms, answer";
pub type NotificationRow = (
    String,
    String,
    String,
    String,
    i32,
    String,
    String,
    String,
    i32,
    i64,
    i64,
    i64,
    Option<String>,
);

pub fn notification_from_row(row: NotificationRow) -> Result<NotificationRecord, StoreError> {
    let (
        id,
        user_id,
        device_id,
        provider,
        partition,
        conversation_id,
        payload,
        status,
        attempts,
        next_attempt_ms,
        created_ms,
        updated_ms,
        answer,
    ) = row;
    Ok(NotificationRecord {
        id,
        user_id,
        device_id,
        provider,
        partition: partition as u32,
        conversation_id,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        status: NotificationStatus::parse(&status)
            .ok_or_else(|| bad("notification status", &status))?,
        attempts: attempts as u32,
        next_attempt_ms,
        created_ms,
        updated_ms,
        answer,
    })
}

pub fn notification_values(r: &NotificationRecord) -> Values {
    vec![
        text(&r.id),
        text(&r.user_id),
        text(&r.device_id),
        text(&r.provider),
        int(r.partition),
        text(&r.conversation_id),
        text(r.payload.to_string()),
        text(r.status.as_str()),
        int(r.attempts),
        big(r.next_attempt_ms),
        big(r.created_ms),
        big(r.updated_ms),
        opt_text(&r.answer),
    ]
}

/// The UTC day of a unix-ms time, the partition of the global log index.
pub fn day_of(ms: i64) -> String {
    im_events::rfc3339_ms(ms)[..10].to_string()
}

#[cfg(test)]
mod tests;
