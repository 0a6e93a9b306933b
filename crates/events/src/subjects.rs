//! Subject and stream names. The stream definitions themselves live in
//! `schemas/streams.json`; these are the names code refers to.

pub const STREAM_INGEST: &str = "IM_INGEST";
pub const STREAM_ACCEPTED: &str = "IM_ACCEPTED";
pub const STREAM_TIMELINE: &str = "IM_TIMELINE";
pub const STREAM_DELIVERY: &str = "IM_DELIVERY";
pub const STREAM_EVENTS: &str = "IM_EVENTS";
pub const STREAM_DLQ: &str = "IM_DLQ";

pub const INGEST_PREFIX: &str = "im.ingest";
pub const REJECTED_SUBJECT: &str = "im.events.message.rejected";
pub const COMMITTED_SUBJECT: &str = "im.events.message.committed";
pub const LEASE_BUCKET: &str = "IM_LEASES";

/// `im.ingest.<type without im.>`, e.g. `im.ingest.message.send`.
pub fn ingest_subject(event_type: &str) -> String {
    format!(
        "{INGEST_PREFIX}.{}",
        event_type.strip_prefix("im.").unwrap_or(event_type)
    )
}

/// Keyed ingest, as published: `im.ingest.k.<hex of the conversation
/// id>.<type without im.>`. IM_INGEST's subject transform stores it as
/// [`keyed_stored_prefix`]`.<p>.<hex>.<type>`, `p` a hash of the key: ingest
/// partition `p` reads it, so one conversation's keyed events stay in order
/// while the partitions run in parallel. Unkeyed events
/// (`im.ingest.<type>`) are read by ingest partition 0.
pub fn keyed_ingest_subject(event_type: &str, conversation_id: &str) -> String {
    format!(
        "{KEYED_INGEST_PREFIX}.{}.{}",
        hex(conversation_id),
        event_type.strip_prefix("im.").unwrap_or(event_type)
    )
}

/// What keyed publishers publish under.
pub const KEYED_INGEST_PREFIX: &str = "im.ingest.k";
/// What IM_INGEST stores keyed events under (outside `im.ingest.>`, so the
/// unkeyed reader does not see them, and no publisher can write there
/// directly: no stream listens on it).
pub const KEYED_STORED_PREFIX: &str = "im.keyed";

/// IM_INGEST's subject transform for `partitions` ingest partitions:
/// (source, destination).
pub fn keyed_ingest_transform(partitions: u32) -> (String, String) {
    (
        format!("{KEYED_INGEST_PREFIX}.*.>"),
        format!("{KEYED_STORED_PREFIX}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}.>"),
    )
}

/// The subject a publisher should use for an event: keyed by the
/// conversation that orders it when one can be told from its data, else
/// unkeyed (ingest then refuses it with the reason).
pub fn ingest_subject_for(event_type: &str, data: &serde_json::Value) -> String {
    match crate::ids::ordering_key(event_type, data) {
        Some(key) => keyed_ingest_subject(event_type, &key),
        None => ingest_subject(event_type),
    }
}

/// The subject to publish a stored ingest event on again (a redriven dead
/// letter): a keyed event as its publisher published it, the partition
/// the stream gave it left out; any other subject as it is.
pub fn republish_subject(stored: &str) -> String {
    stored
        .strip_prefix(KEYED_STORED_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.split_once('.'))
        .map(|(_, rest)| format!("{KEYED_INGEST_PREFIX}.{rest}"))
        .unwrap_or_else(|| stored.to_string())
}

/// The key token and the rest of a keyed ingest subject, as published or
/// as stored.
fn keyed_parts(subject: &str) -> Option<(&str, &str)> {
    let rest = match subject.strip_prefix(KEYED_INGEST_PREFIX) {
        Some(rest) => rest.strip_prefix('.')?,
        None => {
            let rest = subject
                .strip_prefix(KEYED_STORED_PREFIX)?
                .strip_prefix('.')?;
            rest.split_once('.')?.1
        }
    };
    let (key, event) = rest.split_once('.')?;
    (!key.is_empty() && !event.is_empty()).then_some((key, event))
}

/// The partition a stored keyed subject (`im.keyed.<p>.<hex>.<type>`)
/// was put in, and its key token.
pub fn stored_partition(subject: &str) -> Option<(u32, &str)> {
    let rest = subject
        .strip_prefix(KEYED_STORED_PREFIX)?
        .strip_prefix('.')?;
    let (partition, rest) = rest.split_once('.')?;
    let key = rest.split('.').next()?;
    Some((partition.parse().ok()?, key))
}

/// The conversation a keyed ingest subject was keyed by (None for an
/// unkeyed one; `Some(None)` for a key that is not hex).
pub fn ingest_key_of_subject(subject: &str) -> Option<Option<String>> {
    keyed_parts(subject).map(|(key, _)| unhex(key))
}

/// The event type a publisher meant by its ingest subject.
pub fn type_from_ingest_subject(subject: &str) -> Option<String> {
    if let Some((_, event)) = keyed_parts(subject) {
        return Some(format!("im.{event}"));
    }
    subject
        .strip_prefix("im.ingest.")
        .map(|rest| format!("im.{rest}"))
}

pub fn accepted_subject(partition: u32, event_type: &str) -> String {
    format!(
        "im.accepted.{partition}.{}",
        event_type.strip_prefix("im.").unwrap_or(event_type)
    )
}

/// Timeline subjects have exactly two tokens after the partition so that the
/// stream can republish them as `im.events.<a>.<b>`.
pub fn timeline_subject(partition: u32, event_type: &str) -> String {
    format!(
        "im.timeline.{partition}.{}",
        event_type.strip_prefix("im.").unwrap_or(event_type)
    )
}

/// `im.accepted.<p>.batch`: an [`crate::AcceptedBatch`].
pub fn accepted_batch_subject(partition: u32) -> String {
    format!("im.accepted.{partition}.batch")
}

/// `im.timeline.<p>.batch`: a [`crate::TimelineBatch`].
pub fn timeline_batch_subject(partition: u32) -> String {
    format!("im.timeline.{partition}.batch")
}

/// The public subject of an outbound event: `im.events.<type without im.>`.
pub fn events_subject(event_type: &str) -> String {
    format!(
        "im.events.{}",
        event_type.strip_prefix("im.").unwrap_or(event_type)
    )
}

/// The partition of a partitioned stage's subject (`im.accepted.3.…` → 3).
pub fn partition_of_subject(subject: &str) -> Option<u32> {
    subject.split('.').nth(2)?.parse().ok()
}

/// Whether a stream message on `subject` is a batch envelope.
pub fn is_batch_subject(subject: &str) -> bool {
    subject.ends_with(".batch")
}

pub fn delivery_subject(partition: u32, kind: &str) -> String {
    format!("im.delivery.{partition}.{kind}")
}

/// Core NATS (not stored): what unread committed for users of partition
/// `p`, for the push function. A lost notice costs only latency: devices sync.
/// Core NATS: a message committed in a read-diffusion (large) group; push
/// notifies the members who are online.
pub const GROUP_PUSH_SUBJECT: &str = "im.push.group";

pub fn push_subject(partition: u32) -> String {
    format!("im.push.{partition}")
}

/// Core NATS: the frames of several users a gateway holds, in one message
/// ([`crate::frames::GatewayFrames`]): a batch's pushes cost a message per
/// gateway, not one per device (push and dedupe find the gateways in
/// presence); one subscription per gateway, not one per connected user.
pub fn gateway_frames_subject(gateway: &str) -> String {
    format!("im.gw.{gateway}.frames")
}

/// Core NATS, every gateway: ephemeral frames (typing) for a list of users,
/// each gateway handing them to the users' devices it holds (the same
/// [`crate::frames::GatewayFrames`] as a gateway's own subject).
pub const GATEWAY_BROADCAST_SUBJECT: &str = "im.gw.all";

pub fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Presence and delivery-cursor KV key of a device.
pub fn device_key(user: &str, device: &str) -> String {
    format!("{}.{}", hex(user), hex(device))
}

pub const PRESENCE_BUCKET: &str = "IM_PRESENCE";
pub const DELIVERED_BUCKET: &str = "IM_DELIVERED";
/// Device push registrations (`user.device` -> provider and token).
pub const PUSH_TOKENS_BUCKET: &str = "IM_PUSH_TOKENS";

/// Core NATS request: re-queue a dead notification in the outbox of the
/// offline owner of user partition `p` (`imctl dlq redrive`).
pub fn offline_redrive_subject(partition: u32) -> String {
    format!("im.offline.redrive.{partition}")
}

pub fn dlq_subject(function: &str) -> String {
    format!("im.dlq.{function}")
}

#[cfg(test)]
mod tests;
