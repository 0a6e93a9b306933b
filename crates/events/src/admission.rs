//! Admission: the checks every inbound event passes before anything acts on
//! it, whoever reads it first.
//!
//! An event stored in `IM_INGEST` is parsed (either CloudEvents content
//! mode), validated against its JSON Schema, normalized (`dm:` ids ordered,
//! member lists sorted and deduplicated) and checked for what needs no
//! stored state: its key, the partition it is stored in, and that a user's
//! source acts only as that user. Keyed events are admitted by `dedupe`
//! when it reads them (one stream write and one hop less per message than
//! a stage of their own); unkeyed ones by `ingest`, before it stores a copy
//! keyed by the conversation. Both run this code, so an event is judged the
//! same wherever it enters, and `imctl replay` judges it as they did.

use crate::ids::direct_members;
use crate::inbound::{Inbound, InboundMessage, Limits};
use crate::{parse_inbound, rfc3339_ms, Accepted, Command, ConversationKind, Envelope};
use crate::{ErrorCode, EventError};

/// The stage whose checks these are: a refusal is dead-lettered under its
/// name (`im.dlq.ingest`) whichever process refused it.
pub const STAGE: &str = "ingest";

/// Header on the keyed copy of an unkeyed event: the original's IM_INGEST
/// stream sequence.
pub const REKEYED_FROM: &str = "Im-Rekeyed-From";

/// What admission needs to know of the deployment.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Largest message body in bytes (`IM_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Conversation partitions: a keyed event must be stored in its key's.
    pub conversation_partitions: u32,
}

/// Pure: an inbound message and the time JetStream stored it (stable under
/// replay) → the accepted event, or the reason it is refused.
pub fn admit(
    message: &InboundMessage<'_>,
    published_ms: i64,
    rules: &Rules,
) -> Result<Accepted, EventError> {
    let inbound = parse_inbound(
        message,
        &Limits {
            max_body_bytes: rules.max_body_bytes,
        },
    )?;
    let Inbound {
        source,
        id,
        time,
        command,
        trace,
    } = inbound;
    let command = normalize(command)?;
    check_key(message.subject, &command)?;
    check_partition(message.subject, rules.conversation_partitions)?;
    check_source(&source, &command)?;
    let received = rfc3339_ms(published_ms);
    let mut accepted = Envelope::new(
        source,
        id,
        time.unwrap_or_else(|| received.clone()),
        command,
    )
    .with_trace(trace);
    accepted.imreceived = Some(received);
    Ok(accepted)
}

/// A keyed event must be keyed by the conversation that orders it: its
/// key picks the partition, and a conversation's events keep their order
/// only within one partition.
pub fn check_key(subject: &str, command: &Command) -> Result<(), EventError> {
    let Some(key) = crate::subjects::ingest_key_of_subject(subject) else {
        return Ok(());
    };
    let conversation = command.conversation_id();
    if key.as_deref() == Some(conversation.as_ref()) {
        return Ok(());
    }
    Err(EventError::new(
        ErrorCode::SchemaViolation,
        format!(
            "{subject} is keyed by {}, but the event is about {conversation}: key it by the hex of {conversation} (im.ingest.k.{}.<type>) or publish it unkeyed",
            key.map_or_else(|| "a key that is not hex".to_string(), |k| format!("{k:?}")),
            crate::subjects::hex(&conversation)
        ),
    ))
}

/// A keyed event is stored in the partition of its key: the one
/// nats-server's mapping gives it. Published straight to another
/// partition's subject (a publisher allowed `im.keyed.>`, which sharded
/// streams need), it would be ordered apart from its conversation's other
/// events.
pub fn check_partition(subject: &str, partitions: u32) -> Result<(), EventError> {
    let Some((partition, key)) = crate::subjects::stored_partition(subject) else {
        return Ok(());
    };
    let expected = crate::partition::nats_partition(key, partitions);
    if partition == expected {
        return Ok(());
    }
    Err(EventError::new(
        ErrorCode::SchemaViolation,
        format!(
            "{subject} is stored in partition {partition}, but its key belongs to partition {expected}: publish keyed events on im.ingest.k.<hex>.<type> and let the server place them"
        ),
    ))
}

/// A user's source (`urn:im:device:<user>:…`, `urn:im:user:<user>`) carries
/// only that user's own actions: whoever publishes under it, no event of it
/// can act as someone else or manage conversations. (The gateway already
/// gives a user's token no other source; this holds for every publisher.)
pub fn check_source(source: &str, command: &Command) -> Result<(), EventError> {
    let Some(owner) = crate::ids::user_of_source(source) else {
        return Ok(());
    };
    match command.actor() {
        Some(actor) if actor == owner => Ok(()),
        Some(actor) => Err(EventError::new(
            ErrorCode::Forbidden,
            format!("source {source} is {owner}'s; its events cannot act as {actor}"),
        )),
        None => Err(EventError::new(
            ErrorCode::Forbidden,
            format!(
                "source {source} is {owner}'s; a {} needs a service's source",
                command.type_name()
            ),
        )),
    }
}

fn sorted_unique(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids.dedup();
    ids
}

/// Canonical form, plus the checks that need no stored state.
pub fn normalize(command: Command) -> Result<Command, EventError> {
    let normalize_dm = |conversation_id: &str| match direct_members(conversation_id) {
        Some((a, b)) if a == b => Err(EventError::new(
            ErrorCode::InvalidId,
            format!("{conversation_id} names the same user twice"),
        )),
        _ => Ok(crate::ids::canonical_conversation_id(conversation_id).into_owned()),
    };
    Ok(match command {
        Command::Send(mut send) => {
            send.conversation_id = normalize_dm(&send.conversation_id)?;
            if let Some((a, b)) = direct_members(&send.conversation_id) {
                if send.sender_id != a && send.sender_id != b {
                    return Err(EventError::new(
                        ErrorCode::NotMember,
                        format!(
                            "sender {} is not a member of {}",
                            send.sender_id, send.conversation_id
                        ),
                    ));
                }
            }
            send.mentions = sorted_unique(send.mentions);
            Command::Send(send)
        }
        Command::Create(mut create) => {
            create.conversation_id = normalize_dm(&create.conversation_id)?;
            create.members = sorted_unique(create.members);
            create.admins = sorted_unique(create.admins);
            if create.kind == ConversationKind::Direct && create.members.len() != 2 {
                return Err(EventError::new(
                    ErrorCode::SchemaViolation,
                    "a direct conversation has exactly two members",
                ));
            }
            if let Some((a, b)) = direct_members(&create.conversation_id) {
                if create.kind != ConversationKind::Direct
                    || create.members != [a.to_string(), b.to_string()]
                {
                    return Err(EventError::new(
                        ErrorCode::SchemaViolation,
                        format!(
                            "{} must be a direct conversation of {a} and {b}",
                            create.conversation_id
                        ),
                    ));
                }
            }
            if let Some(admin) = create
                .admins
                .iter()
                .find(|admin| !create.members.contains(admin))
            {
                return Err(EventError::new(
                    ErrorCode::SchemaViolation,
                    format!("admin {admin} is not among the members"),
                ));
            }
            Command::Create(create)
        }
        Command::AddMembers(mut change) => {
            change.conversation_id = normalize_dm(&change.conversation_id)?;
            change.members = sorted_unique(change.members);
            Command::AddMembers(change)
        }
        Command::RemoveMembers(mut change) => {
            change.conversation_id = normalize_dm(&change.conversation_id)?;
            change.members = sorted_unique(change.members);
            Command::RemoveMembers(change)
        }
        Command::Mute(mut mute) => {
            mute.conversation_id = normalize_dm(&mute.conversation_id)?;
            if let Some(until) = &mute.until {
                if crate::parse_rfc3339_ms(until).is_none() {
                    return Err(EventError::new(
                        ErrorCode::SchemaViolation,
                        format!("until {until:?} is not an RFC 3339 time"),
                    ));
                }
            }
            Command::Mute(mute)
        }
        Command::Read(mut read) => {
            read.conversation_id = normalize_dm(&read.conversation_id)?;
            Command::Read(read)
        }
        Command::Edit(mut edit) => {
            edit.conversation_id = normalize_dm(&edit.conversation_id)?;
            Command::Edit(edit)
        }
        Command::Recall(mut recall) => {
            recall.conversation_id = normalize_dm(&recall.conversation_id)?;
            Command::Recall(recall)
        }
        Command::React(mut react) => {
            react.conversation_id = normalize_dm(&react.conversation_id)?;
            crate::reactions::check_emoji(&react.emoji)?;
            Command::React(react)
        }
        Command::Delivered(mut delivered) => {
            delivered.conversation_id = normalize_dm(&delivered.conversation_id)?;
            Command::Delivered(delivered)
        }
        // Ordered by the two users' direct conversation (its id is made
        // from them, already in order).
        Command::Block(block) | Command::Unblock(block)
            if block.user_id == block.blocked_user_id =>
        {
            return Err(EventError::new(
                ErrorCode::SchemaViolation,
                format!("{} cannot block themselves", block.user_id),
            ))
        }
        block @ (Command::Block(_) | Command::Unblock(_)) => block,
    })
}

/// What a refused event is known by, as far as it can be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventIdentity {
    pub source: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
}

/// Best effort: the identity of an event that could not be parsed fully.
pub fn identity_of(message: &InboundMessage<'_>) -> EventIdentity {
    let header = |name: &str| {
        message
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    if header("ce-specversion").is_some() {
        return EventIdentity {
            source: header("ce-source"),
            event_id: header("ce-id"),
            event_type: header("ce-type"),
        };
    }
    let value: serde_json::Value = serde_json::from_slice(message.payload).unwrap_or_default();
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    EventIdentity {
        source: field("source"),
        event_id: field("id"),
        event_type: field("type")
            .or_else(|| crate::subjects::type_from_ingest_subject(message.subject)),
    }
}

/// The original IM_INGEST sequence a keyed copy was made from.
pub fn rekeyed_from(headers: &[(String, String)]) -> Option<u64> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(REKEYED_FROM))
        .and_then(|(_, value)| value.parse().ok())
}

#[cfg(test)]
mod tests;
