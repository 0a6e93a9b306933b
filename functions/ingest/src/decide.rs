//! The pure core of `ingest`: routing, validation and normalization of one
//! inbound event, and the envelopes a batch forwards.

use super::*;

#[derive(Debug, Clone)]
pub struct Config {
    pub max_body_bytes: usize,
    pub conversation_partitions: u32,
}

/// Header on the keyed copy of an unkeyed event: the original's IM_INGEST
/// stream sequence.
pub const REKEYED_FROM: &str = "Im-Rekeyed-From";

/// What ingest does with an inbound event it can read.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Accepted: forward it to dedupe on `subject`.
    Accept {
        subject: String,
        event: Box<Accepted>,
    },
    /// Unkeyed: publish it again on `subject`, keyed by its conversation,
    /// and process it there.
    Rekey { subject: String },
}

/// Pure: an inbound message and the time JetStream stored it → where it
/// goes, or the reason it is refused.
pub fn route(message: &Incoming, config: &Config) -> Result<Route, EventError> {
    let (subject, event) = decide(message, config)?;
    if im_events::subjects::ingest_key_of_subject(&message.subject).is_none() {
        return Ok(Route::Rekey {
            subject: im_events::subjects::keyed_ingest_subject(
                event.payload.type_name(),
                &event.payload.conversation_id(),
            ),
        });
    }
    Ok(Route::Accept {
        subject,
        event: Box::new(event),
    })
}

/// Pure: the keyed copy of an unkeyed event, published on `subject`: its
/// payload and headers as published (the reply subject of a waiting
/// publisher, a binary-mode event's attributes) but JetStream's own, with
/// [`REKEYED_FROM`] naming the original. Its message id is the original's
/// sequence: a redelivered original is copied once.
pub fn rekeyed(message: &Incoming, subject: String) -> Outgoing {
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in &message.headers {
        if !name.to_ascii_lowercase().starts_with("nats-") {
            headers.append(name.as_str(), value.as_str());
        }
    }
    headers.insert(REKEYED_FROM, message.stream_seq.to_string().as_str());
    Outgoing {
        subject,
        message_id: Some(format!("rekey:{}", message.stream_seq)),
        headers: Some(headers),
        payload: message.payload.clone(),
    }
}

/// The original IM_INGEST sequence a keyed copy was made from.
pub fn rekeyed_from(headers: &[(String, String)]) -> Option<u64> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(REKEYED_FROM))
        .and_then(|(_, value)| value.parse().ok())
}

/// Pure: an inbound message and the time JetStream stored it → the accepted
/// event and its subject, or the reason it is refused.
pub fn decide(message: &Incoming, config: &Config) -> Result<(String, Accepted), EventError> {
    let inbound = parse_inbound(
        &InboundMessage {
            subject: &message.subject,
            headers: &message.headers,
            payload: &message.payload,
        },
        &Limits {
            max_body_bytes: config.max_body_bytes,
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
    check_key(&message.subject, &command)?;
    check_partition(&message.subject, config.conversation_partitions)?;
    check_source(&source, &command)?;
    let received = rfc3339_ms(message.published_ms);
    let subject = accepted_subject(
        partition_of(&command.conversation_id(), config.conversation_partitions),
        command.type_name(),
    );
    let mut accepted = Envelope::new(
        source,
        id,
        time.unwrap_or_else(|| received.clone()),
        command,
    )
    .with_trace(trace);
    accepted.imreceived = Some(received);
    Ok((subject, accepted))
}

/// A keyed event must be keyed by the conversation that orders it: its
/// key picks the ingest partition, and a conversation's events keep their
/// order only within one partition.
pub fn check_key(subject: &str, command: &Command) -> Result<(), EventError> {
    let Some(key) = im_events::subjects::ingest_key_of_subject(subject) else {
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
            im_events::subjects::hex(&conversation)
        ),
    ))
}

/// A keyed event is stored in the partition of its key: the one
/// nats-server's mapping gives it. Published straight to another
/// partition's subject (a publisher allowed `im.keyed.>`, which sharded
/// streams need), it would be ordered apart from its conversation's other
/// events.
pub fn check_partition(subject: &str, partitions: u32) -> Result<(), EventError> {
    let Some((partition, key)) = im_events::subjects::stored_partition(subject) else {
        return Ok(());
    };
    let expected = im_events::partition::nats_partition(key, partitions);
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
    let Some(owner) = im_events::ids::user_of_source(source) else {
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

pub(super) fn sorted_unique(mut ids: Vec<String>) -> Vec<String> {
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
        _ => Ok(im_events::ids::canonical_conversation_id(conversation_id).into_owned()),
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
                if im_events::parse_rfc3339_ms(until).is_none() {
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
            im_events::reactions::check_emoji(&react.emoji)?;
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

/// The `Nats-Msg-Id` of an accepted event: its identity and what it is, so
/// that a repeat of the same event is dropped by JetStream while a
/// different event reusing the (source, id) reaches dedupe, which refuses
/// it as a conflict (dropped here, it would vanish without a word).
pub fn accepted_msg_id(accepted: &Accepted) -> String {
    let identity = format!(
        "{}\u{0}{}\u{0}{}",
        accepted.id,
        accepted.payload.conversation_id(),
        accepted.payload.fingerprint()
    );
    message_id_for(&accepted.source, &identity)
}

/// The answer to a publisher waiting on a refused event.
pub fn refusal(error: &EventError) -> im_events::Verdict {
    im_events::Verdict::refused(error)
}

/// Best effort: the identity of an event that could not be parsed fully.
pub fn identity_of(message: &Incoming) -> Identity {
    let header = |name: &str| {
        message
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    if header("ce-specversion").is_some() {
        return Identity {
            source: header("ce-source"),
            event_id: header("ce-id"),
            event_type: header("ce-type"),
        };
    }
    let value: serde_json::Value = serde_json::from_slice(&message.payload).unwrap_or_default();
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    Identity {
        source: field("source"),
        event_id: field("id"),
        event_type: field("type")
            .or_else(|| im_events::subjects::type_from_ingest_subject(&message.subject)),
    }
}

/// Pure: a batch's accepted events as one envelope per conversation
/// partition (in stream order inside each), so one stream write carries
/// the whole batch's events of a partition. The message id is derived from
/// what the envelope carries, so a redelivered batch grouped the same way is
/// dropped as a duplicate (and one grouped differently is still applied
/// once: dedupe's idempotency answers repeats).
pub fn envelopes(items: Vec<(u32, AcceptedItem)>) -> Result<Vec<Outgoing>, serde_json::Error> {
    let mut by_partition: std::collections::BTreeMap<u32, Vec<AcceptedItem>> =
        std::collections::BTreeMap::new();
    for (partition, item) in items {
        by_partition.entry(partition).or_default().push(item);
    }
    by_partition
        .into_iter()
        .map(|(partition, events)| {
            let ids: Vec<String> = events
                .iter()
                .map(|item| accepted_msg_id(&item.event))
                .collect();
            let message_id = format!(
                "acc:{partition}:{}:{:016x}",
                events.len(),
                im_events::partition::fnv1a64(ids.join("\n").as_bytes())
            );
            let payload = serde_json::to_vec(&AcceptedBatch { events })?;
            Ok(Outgoing {
                subject: accepted_batch_subject(partition),
                message_id: Some(message_id),
                headers: None,
                payload: payload.into(),
            })
        })
        .collect()
}
