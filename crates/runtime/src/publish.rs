//! Publishing to JetStream with every publish of a batch in flight at once,
//! then waiting for all acks: the batch is durable downstream only when this
//! returns Ok.

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

pub async fn publish_all(js: &jetstream::Context, outgoing: Vec<Outgoing>) -> Result<(), String> {
    let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(outgoing.len());
    for message in outgoing {
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
            .map_err(|error| format!("publish to {}: {error}", message.subject))?;
        pending.push(future);
    }
    for future in pending {
        future
            .await
            .map_err(|error| format!("publish ack: {error}"))?;
    }
    Ok(())
}
