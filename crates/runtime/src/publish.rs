//! Publishing a batch to JetStream: publishes are pipelined, and the batch
//! is durable downstream only when this returns Ok.
//!
//! async-nats lends every publish awaiting its ack one permit from a pool
//! shared by the whole context (5,000 by default), returned only when the ack
//! future is awaited or dropped. Partition tasks publishing whole batches at
//! once could each hold part of the pool while waiting for more: with a large
//! backlog the permits run out and every task waits forever. So each call
//! keeps at most [`PUBLISH_WINDOW`] acks outstanding; a process runs at most
//! [`MAX_CONCURRENT_PUBLISHERS`] partition tasks, which together stay within
//! the pool.

use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::HeaderMap;
use bytes::Bytes;

pub struct Outgoing {
    pub subject: String,
    /// Nats-Msg-Id: JetStream drops a repeat within the duplicate window.
    pub message_id: Option<String>,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

/// Header naming a core subject on which the pipeline answers a publisher
/// (the gateway) once its event is applied or refused. Carried from
/// IM_INGEST to IM_ACCEPTED; dedupe, or ingest on refusal, answers.
pub const REPLY_HEADER: &str = "Im-Reply-To";

/// The reply subject an event carries, if it names a gateway's reply
/// subject (`im.gw.<gateway>.reply.<token>`): anything else, which a
/// publisher could point at an internal subject, is not answered.
pub fn reply_subject(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(REPLY_HEADER))
        .map(|(_, value)| value.as_str())
        .filter(|subject| is_gateway_reply_subject(subject))
}

pub fn is_gateway_reply_subject(subject: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.len() >= 5
        && tokens[0] == "im"
        && tokens[1] == "gw"
        && tokens[tokens.len() - 2] == "reply"
        && tokens
            .iter()
            .all(|t| !t.is_empty() && !t.contains(['*', '>', ' ']))
}

/// Answer a publisher; best effort (it times out and retries if lost).
pub async fn reply(client: &async_nats::Client, subject: &str, verdict: &im_events::Verdict) {
    publish_json(client, subject.to_string(), verdict).await;
}

/// Publish `value` as JSON on core NATS, best effort (live subscribers:
/// verdicts, push notices, the public feed); one that cannot be serialized
/// is logged with its subject, never sent empty.
pub async fn publish_json(
    client: &async_nats::Client,
    subject: String,
    value: &impl serde::Serialize,
) {
    match serde_json::to_vec(value) {
        Ok(payload) => {
            let _ = client.publish(subject, payload.into()).await;
        }
        Err(error) => tracing::error!(%error, subject, "not serializable; not published"),
    }
}

/// Frames for devices, gathered over a batch and published once per
/// gateway (`im.gw.<gateway>.frames`, [`im_events::frames`]) instead of
/// once per user and frame; the same frame for several users in a row is
/// one entry. Everything a publisher sends a gateway goes on that one
/// subject, so the gateway hands it on in the order it was published. A
/// frame with a trace (tracing on) goes in a message of its own, with the
/// trace in its headers, so the gateway's span hangs under it.
#[derive(Default)]
pub struct FramesOut {
    by_gateway: std::collections::BTreeMap<String, Vec<FrameEntry>>,
}

struct FrameEntry {
    users: Vec<String>,
    frame: Bytes,
    trace: Option<im_events::Trace>,
}

/// Most frame bytes one message to a gateway carries (more go in another).
const FRAMES_PER_MESSAGE_BYTES: usize = 512 * 1024;

impl FramesOut {
    /// `frame` (JSON text) for `user`'s devices on `gateway`.
    pub fn add(
        &mut self,
        gateway: &str,
        user: &str,
        frame: &Bytes,
        trace: Option<&im_events::Trace>,
    ) {
        let trace = trace.filter(|_| crate::trace::enabled()).cloned();
        let entries = self.by_gateway.entry(gateway.to_string()).or_default();
        match entries.last_mut() {
            Some(last) if trace.is_none() && last.trace.is_none() && last.frame == *frame => {
                last.users.push(user.to_string())
            }
            _ => entries.push(FrameEntry {
                users: vec![user.to_string()],
                frame: frame.clone(),
                trace,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_gateway.is_empty()
    }

    /// Publish everything gathered (core NATS, best effort: a device that
    /// misses a push finds the gap and syncs).
    pub async fn publish(self, client: &async_nats::Client) {
        for (gateway, entries) in self.by_gateway {
            let subject = im_events::subjects::gateway_frames_subject(&gateway);
            let mut chunk: Vec<(&[String], &str)> = Vec::new();
            let mut bytes = 0;
            for entry in &entries {
                let Ok(text) = std::str::from_utf8(&entry.frame) else {
                    tracing::error!(gateway, "a frame that is not text; not pushed");
                    continue;
                };
                if let Some(trace) = &entry.trace {
                    publish_frames(client, &subject, &chunk, None).await;
                    chunk.clear();
                    bytes = 0;
                    publish_frames(client, &subject, &[(&entry.users, text)], Some(trace)).await;
                    continue;
                }
                bytes += text.len() + entry.users.iter().map(|user| user.len() + 3).sum::<usize>();
                chunk.push((&entry.users, text));
                if bytes >= FRAMES_PER_MESSAGE_BYTES {
                    publish_frames(client, &subject, &chunk, None).await;
                    chunk.clear();
                    bytes = 0;
                }
            }
            publish_frames(client, &subject, &chunk, None).await;
        }
    }
}

async fn publish_frames(
    client: &async_nats::Client,
    subject: &str,
    frames: &[(&[String], &str)],
    trace: Option<&im_events::Trace>,
) {
    if frames.is_empty() {
        return;
    }
    match im_events::frames::gateway_frames_payload(frames) {
        Ok(payload) => {
            let _ = match trace {
                Some(trace) => {
                    client
                        .publish_with_headers(
                            subject.to_string(),
                            crate::trace::headers(trace),
                            payload.into(),
                        )
                        .await
                }
                None => client.publish(subject.to_string(), payload.into()).await,
            };
        }
        Err(error) => tracing::error!(%error, subject, "frames not serializable; not pushed"),
    }
}

/// Most acks one call keeps outstanding.
pub const PUBLISH_WINDOW: usize = 128;
/// Concurrent publishers one context supports without exhausting its permits.
pub const MAX_CONCURRENT_PUBLISHERS: usize = 5_000 / PUBLISH_WINDOW;

/// Whether a publish failed because its stream is full (`max_bytes` with
/// discard new, or the server's store limit): retrying will not help.
pub fn is_storage_full(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    [
        "maximum bytes exceeded",
        "maximum messages exceeded",
        "insufficient resources",
        "storage limit",
    ]
    .iter()
    .any(|sign| error.contains(sign))
}

/// Why a publish failed, by what the caller can do: nothing until space is
/// freed, or try again.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PublishError {
    /// The stream or the server's store is full ([`is_storage_full`]).
    #[error("{0}")]
    StorageFull(String),
    /// Not stored, or not known to be: the same publish may be retried (its
    /// message id makes a repeat harmless).
    #[error("{0}")]
    Failed(String),
}

impl PublishError {
    fn of(message: String) -> Self {
        if is_storage_full(&message) {
            PublishError::StorageFull(message)
        } else {
            PublishError::Failed(message)
        }
    }
}

pub async fn publish_all(
    js: &jetstream::Context,
    outgoing: Vec<Outgoing>,
) -> Result<(), PublishError> {
    let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(outgoing.len().min(PUBLISH_WINDOW));
    for message in outgoing {
        if pending.len() >= PUBLISH_WINDOW {
            for future in pending.drain(..) {
                future
                    .await
                    .map_err(|error| PublishError::of(format!("publish ack: {error}")))?;
            }
        }
        let mut publish = jetstream::message::PublishMessage::build().payload(message.payload);
        if let Some(headers) = message.headers {
            publish = publish.headers(headers);
        }
        if let Some(id) = message.message_id {
            publish = publish.message_id(id);
        }
        let future = js
            .send_publish(message.subject.clone(), publish)
            .await
            .map_err(|error| {
                PublishError::of(format!("publish to {}: {error}", message.subject))
            })?;
        pending.push(future);
    }
    for future in pending {
        future
            .await
            .map_err(|error| PublishError::of(format!("publish ack: {error}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod reply_tests {
    use super::*;

    #[test]
    fn only_gateway_reply_subjects_are_answered() {
        let with = |subject: &str| vec![(REPLY_HEADER.to_string(), subject.to_string())];
        assert_eq!(
            reply_subject(&with("im.gw.gateway-1.reply.abc")),
            Some("im.gw.gateway-1.reply.abc")
        );
        for hostile in [
            "im.accepted.3.message.send",
            "im.gw.g1.user.616c696365",
            "im.gw.g1.reply.>",
            "im.gw.*.reply.x",
            "$KV.IM_LEASES.x",
            "",
        ] {
            assert_eq!(reply_subject(&with(hostile)), None, "{hostile}");
        }
    }
}
