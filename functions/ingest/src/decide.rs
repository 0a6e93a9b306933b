//! The pure core of `ingest`: where an unkeyed event goes, and its copy.

use super::*;

/// What admission needs: the body limit and the partition count.
pub type Config = Rules;

/// The message as admission reads it.
pub fn inbound(message: &Incoming) -> InboundMessage<'_> {
    InboundMessage {
        subject: &message.subject,
        headers: &message.headers,
        payload: &message.payload,
    }
}

/// Pure: an unkeyed event and the time JetStream stored it → the keyed
/// subject to publish its copy on (and the event's trace), or the reason
/// it is refused. A keyed
/// event never reaches ingest (its consumer reads only unkeyed subjects);
/// one that did is refused rather than copied onto itself.
pub fn route(
    message: &Incoming,
    config: &Config,
) -> Result<(String, Option<im_events::Trace>), EventError> {
    if im_events::subjects::ingest_key_of_subject(&message.subject).is_some() {
        return Err(EventError::new(
            ErrorCode::SchemaViolation,
            format!(
                "{} is keyed: dedupe admits keyed events where they are stored, ingest reads only unkeyed ones",
                message.subject
            ),
        ));
    }
    let accepted = admit(&inbound(message), message.published_ms, config)?;
    let subject = im_events::subjects::keyed_ingest_subject(
        accepted.payload.type_name(),
        &accepted.payload.conversation_id(),
    );
    Ok((subject, accepted.trace()))
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

/// The answer to a publisher waiting on a refused event.
pub fn refusal(error: &EventError) -> im_events::Verdict {
    im_events::Verdict::refused(error)
}

/// Best effort: the identity of an event that could not be admitted.
pub fn identity_of(message: &Incoming) -> Identity {
    im_events::admission::identity_of(&inbound(message)).into()
}
