//! Dead letters: the original payload and headers on `im.dlq.<function>`,
//! with `Im-Dlq-*` headers saying why, so an operator can read the reason and
//! redrive the event unchanged after a fix.

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use im_events::subjects::{dlq_subject, REJECTED_SUBJECT};
use im_events::{rfc3339_ms, Envelope, ErrorCode, Rejected, RejectedPayload, PIPELINE_SOURCE};

use crate::publish::{publish_all, Outgoing};

pub const H_FUNCTION: &str = "Im-Dlq-Function";
pub const H_CODE: &str = "Im-Dlq-Code";
pub const H_REASON: &str = "Im-Dlq-Reason";
pub const H_SUBJECT: &str = "Im-Dlq-Subject";
pub const H_STREAM: &str = "Im-Dlq-Stream";
pub const H_STREAM_SEQ: &str = "Im-Dlq-Stream-Seq";
pub const H_DELIVERED: &str = "Im-Dlq-Delivered";
pub const H_TIME: &str = "Im-Dlq-Time";
pub const H_ORIGINAL_MSG_ID: &str = "Im-Dlq-Original-Msg-Id";

/// What the dead letter and the `im.message.rejected` event say.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub function: String,
    pub code: ErrorCode,
    pub reason: String,
    pub original_subject: String,
    pub original_headers: Vec<(String, String)>,
    pub payload: Bytes,
    pub stream: String,
    pub stream_seq: u64,
    pub delivered: i64,
    /// The event's identity and type, where they could be read.
    pub source: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
}

/// Header values must be one line of visible text.
fn header_safe(text: &str) -> String {
    let single: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    single.chars().take(2000).collect()
}

pub fn dead_letter_headers(letter: &DeadLetter, now_ms: i64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &letter.original_headers {
        if name.eq_ignore_ascii_case("Nats-Msg-Id") {
            headers.insert(H_ORIGINAL_MSG_ID, header_safe(value).as_str());
        } else if !name.starts_with("Nats-") {
            headers.append(name.as_str(), header_safe(value).as_str());
        }
    }
    headers.insert(H_FUNCTION, letter.function.as_str());
    headers.insert(H_CODE, letter.code.as_str());
    headers.insert(H_REASON, header_safe(&letter.reason).as_str());
    headers.insert(H_SUBJECT, letter.original_subject.as_str());
    headers.insert(H_STREAM, letter.stream.as_str());
    headers.insert(H_STREAM_SEQ, letter.stream_seq.to_string().as_str());
    headers.insert(H_DELIVERED, letter.delivered.to_string().as_str());
    headers.insert(H_TIME, rfc3339_ms(now_ms).as_str());
    headers
}

/// Publish the dead letter and, for events with a readable identity, an
/// `im.message.rejected` event. Both are deduplicated by JetStream on the
/// original stream position, so a redelivery does not double them.
pub async fn publish_dead_letter(
    js: &jetstream::Context,
    letter: &DeadLetter,
    now_ms: i64,
) -> Result<(), crate::publish::PublishError> {
    // The position names the letter for deduplication; the payload's hash
    // keeps a recreated stream's reused sequence numbers from colliding.
    let position = format!(
        "{}:{}:{:016x}",
        letter.stream,
        letter.stream_seq,
        im_events::partition::fnv1a64(&letter.payload)
    );
    let mut outgoing = vec![Outgoing {
        subject: dlq_subject(&letter.function),
        message_id: Some(format!("dlq:{position}")),
        headers: Some(dead_letter_headers(letter, now_ms)),
        payload: letter.payload.clone(),
    }];
    let rejected = Envelope::new(
        PIPELINE_SOURCE,
        format!("rejected:{position}"),
        rfc3339_ms(now_ms),
        RejectedPayload::Rejected(Rejected {
            source: letter.source.clone().unwrap_or_default(),
            event_id: letter.event_id.clone().unwrap_or_default(),
            event_type: letter.event_type.clone(),
            code: letter.code.as_str().to_string(),
            reason: letter.reason.clone(),
            function: letter.function.clone(),
        }),
    );
    let payload = serde_json::to_vec(&rejected)
        .map_err(|error| crate::publish::PublishError::Failed(error.to_string()))?;
    outgoing.push(Outgoing {
        subject: REJECTED_SUBJECT.to_string(),
        message_id: Some(format!("rejected:{position}")),
        headers: None,
        payload: payload.into(),
    });
    publish_all(js, outgoing).await
}

#[cfg(test)]
mod tests;
