//! Identifier rules of the contract: at most 128 bytes of `[A-Za-z0-9._:@-]`.

use crate::codes::{ErrorCode, EventError};

pub const MAX_ID_LEN: usize = 128;

pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

pub fn check_id(what: &str, id: &str) -> Result<(), EventError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(EventError::new(
            ErrorCode::InvalidId,
            format!("{what} {id:?} is not 1-128 bytes of [A-Za-z0-9._:@-]"),
        ))
    }
}

/// A user or device id as it appears inside composite ids (`dm:a:b`,
/// `urn:im:device:<user>:<device>`): a valid id without `:`, so that the
/// composite splits one way only.
pub fn is_principal_id(id: &str) -> bool {
    is_valid_id(id) && !id.contains(':')
}

/// The CloudEvents source of a user's device. Every event that arrives
/// with a user's token carries a source of that user's own (the gateway
/// sets this one), so no user can pre-empt or replay another's (source, id).
pub const DEVICE_SOURCE_PREFIX: &str = "urn:im:device:";
/// The source of a user's events that come from no particular device.
pub const USER_SOURCE_PREFIX: &str = "urn:im:user:";

/// `urn:im:device:<user>:<device>`, refused when either id could make it
/// ambiguous (contains `:` or is not a valid id).
pub fn device_source(user: &str, device: &str) -> Result<String, EventError> {
    for (what, id) in [("user id", user), ("device id", device)] {
        if !is_principal_id(id) {
            return Err(EventError::new(
                ErrorCode::InvalidId,
                format!("{what} {id:?} must be 1-128 bytes of [A-Za-z0-9._@-] (no ':')"),
            ));
        }
    }
    Ok(format!("{DEVICE_SOURCE_PREFIX}{user}:{device}"))
}

/// The user a source belongs to, if it is a user's (`urn:im:device:<user>:…`
/// or `urn:im:user:<user>`). Only that user's token, or a service, may
/// publish under it, and its events must act as that user.
pub fn user_of_source(source: &str) -> Option<&str> {
    if let Some(rest) = source.strip_prefix(DEVICE_SOURCE_PREFIX) {
        return rest.split(':').next().filter(|user| !user.is_empty());
    }
    source
        .strip_prefix(USER_SOURCE_PREFIX)
        .filter(|user| !user.is_empty())
}

/// The `Nats-Msg-Id` of an event: source and id joined so that no two
/// different pairs give the same value (JetStream drops the second of two
/// equal ids inside its duplicate window). Event ids never contain a space
/// (see [`is_valid_id`]) and sources are URI references, which never do, so
/// the last space separates them.
pub fn nats_msg_id(source: &str, id: &str) -> String {
    format!("{source} {id}")
}

/// The implicit direct conversation of two users: `dm:<smaller>:<larger>`.
pub fn direct_conversation_id(a: &str, b: &str) -> String {
    if a <= b {
        format!("dm:{a}:{b}")
    } else {
        format!("dm:{b}:{a}")
    }
}

/// A conversation id in its one canonical form: a direct conversation's
/// two users in order (`dm:b:a` → `dm:a:b`), any other id as it is.
pub fn canonical_conversation_id(conversation_id: &str) -> std::borrow::Cow<'_, str> {
    match direct_members(conversation_id) {
        Some((a, b)) if a > b => std::borrow::Cow::Owned(direct_conversation_id(a, b)),
        _ => std::borrow::Cow::Borrowed(conversation_id),
    }
}

/// The conversation that orders an inbound event, read from its type and
/// data as published (the key of its ingest subject): what
/// [`crate::Command::conversation_id`] says of the parsed, normalized event,
/// or None when the data does not name a valid one (ingest refuses the
/// event then, with the reason).
pub fn ordering_key(event_type: &str, data: &serde_json::Value) -> Option<String> {
    let field = |name: &str| data.get(name)?.as_str().filter(|id| is_valid_id(id));
    let key = match event_type {
        "im.user.block" | "im.user.unblock" => {
            direct_conversation_id(field("user_id")?, field("blocked_user_id")?)
        }
        _ => canonical_conversation_id(field("conversation_id")?).into_owned(),
    };
    Some(key)
}

/// The two members named by a `dm:` conversation id, if it is one.
/// User ids may not contain `:` for this form to be unambiguous, so a `dm:`
/// id with any other number of parts is not a direct conversation id.
pub fn direct_members(conversation_id: &str) -> Option<(&str, &str)> {
    let rest = conversation_id.strip_prefix("dm:")?;
    let mut parts = rest.split(':');
    let first = parts.next()?;
    let second = parts.next()?;
    if parts.next().is_some() || first.is_empty() || second.is_empty() {
        return None;
    }
    Some((first, second))
}

#[cfg(test)]
mod tests;
