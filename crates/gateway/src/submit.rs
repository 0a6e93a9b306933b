//! Submitting an inbound event: publish it with a reply subject, then wait
//! for the pipeline's verdict (or find it committed after a lost reply).

use super::*;

/// How a publish JetStream did not acknowledge is retried, until the ack
/// timeout: from 100 ms up to a second, jittered per subject so that the
/// gateways a leader election hits do not all come back at once.
const PUBLISH_BACKOFF: im_runtime::backoff::Backoff =
    im_runtime::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));

/// Why the pipeline did not take an event, as the device is told: a code of
/// the contract and what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Refusal {
    pub code: String,
    pub reason: String,
}

impl Refusal {
    pub fn new(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Refusal {
            code: code.into(),
            reason: reason.into(),
        }
    }
}

impl Gateway {
    /// Publish an inbound event and wait for the pipeline's verdict:
    /// `{"ok": true, …}` once applied, `{"ok": false, "code", "reason"}` if
    /// refused.
    pub async fn submit(
        &self,
        event_type: &str,
        source: &str,
        id: &str,
        data: Value,
    ) -> Result<Verdict, Refusal> {
        self.begin(event_type, source, id, data)
            .await?
            .finish(self)
            .await
    }

    /// Publish an inbound event (durable in IM_INGEST when this returns);
    /// the verdict is awaited with [`Pending::finish`]. Splitting the two lets
    /// a connection publish its sends in order while their verdicts overlap.
    pub async fn begin(
        &self,
        event_type: &str,
        source: &str,
        id: &str,
        data: Value,
    ) -> Result<Pending, Refusal> {
        let now = im_events::rfc3339_ms(chrono::Utc::now().timestamp_millis());
        // A trace starts here (the span lasts until the verdict).
        let span = im_runtime::trace::stage_span("gateway.send", None, None, None, 1);
        let trace = span.as_ref().and_then(im_runtime::trace::trace_of);
        let conversation = data["conversation_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // Keyed by its conversation: ingest partitions keep each one in order.
        let subject = im_events::subjects::ingest_subject_for(event_type, &data);
        let mut event = json!({"specversion": "1.0", "id": id, "source": source, "type": event_type, "time": now,
                           "datacontenttype": "application/json", "data": data});
        if let Some(trace) = &trace {
            set_trace(&mut event, trace);
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            im_events::ids::nats_msg_id(source, id).as_str(),
        );
        let payload =
            serde_json::to_vec(&event).map_err(|e| Refusal::new("internal", e.to_string()))?;
        let mut pending = self.publish_for_reply(subject, headers, payload).await?;
        // A quick resend that JetStream dropped: the original has the answer.
        pending.send = event_type == "im.message.send";
        pending.duplicate &= pending.send;
        pending.source = source.to_string();
        pending.id = id.to_string();
        pending.conversation = conversation;
        pending.span = span;
        Ok(pending)
    }

    /// Ask the unread owner of `user`'s partition to copy the messages of
    /// the user's read-diffusion conversations into their sync log, and wait
    /// until it has (so the sync that follows includes them).
    pub async fn materialize(&self, user: &str) -> Result<(), Refusal> {
        use im_events::{DeliveryPayload, Envelope, MaterializeRequest, PIPELINE_SOURCE};
        let partitions = im_runtime::topology::topology().partitions.user;
        let partition = im_events::partition::partition_of(user, partitions);
        let now = im_events::rfc3339_ms(chrono::Utc::now().timestamp_millis());
        let request: im_events::Delivery = Envelope::new(
            PIPELINE_SOURCE,
            uuid::Uuid::new_v4().to_string(),
            now,
            DeliveryPayload::Materialize(MaterializeRequest {
                user_id: user.to_string(),
            }),
        );
        let payload =
            serde_json::to_vec(&request).map_err(|e| Refusal::new("internal", e.to_string()))?;
        let subject = im_events::subjects::delivery_subject(partition, "materialize");
        let pending = self
            .publish_for_reply(subject, async_nats::HeaderMap::new(), payload)
            .await?;
        pending.finish(self).await.map(|_| ())
    }

    /// Publish to JetStream with a reply subject of this gateway's, and
    /// return the wait for the pipeline's answer.
    pub(crate) async fn publish_for_reply(
        &self,
        subject: String,
        mut headers: async_nats::HeaderMap,
        payload: Vec<u8>,
    ) -> Result<Pending, Refusal> {
        let token = self.reply_token();
        let (sender, receiver) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), sender);
        headers.insert(
            im_runtime::publish::REPLY_HEADER,
            format!("{}.{token}", self.reply_prefix()).as_str(),
        );
        // A NATS node dying mid-publish (a leader change, a reconnect) is
        // retried here with the same Nats-Msg-Id, so JetStream stores the
        // event once; the device sees an error only if the cluster stays
        // unreachable.
        let payload: bytes::Bytes = payload.into();
        let mut attempt = 0u32;
        // As long as the device waits for an ack anyway: long enough to
        // ride out a stream leader election after a node dies, however
        // slow (a chaos soak saw elections outlast a 12 s budget: 106
        // `unavailable` frames in 15 minutes, each then resent by hand).
        let give_up = tokio::time::Instant::now() + self.config.ack_timeout;
        let published = loop {
            let result = async {
                self.js
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await
                    .map_err(|e| unavailable(e.to_string()))?
                    .await
                    .map_err(|e| unavailable(e.to_string()))
            }
            .await;
            match result {
                // A full stream stays full until an operator acts: say so
                // at once rather than retry.
                Err(error) if im_runtime::publish::is_storage_full(&error.reason) => {
                    break Err(storage_full(&subject, &error.reason));
                }
                Err(error) if tokio::time::Instant::now() < give_up => {
                    attempt += 1;
                    metrics::counter!("im_gateway_publish_retries_total").increment(1);
                    tracing::info!(attempt, reason = %error.reason, "publish not acknowledged, retrying");
                    tokio::time::sleep(PUBLISH_BACKOFF.delay(attempt as u64, &subject)).await;
                }
                other => break other,
            }
        };
        match published {
            Ok(ack) => Ok(Pending {
                token,
                receiver,
                duplicate: ack.duplicate,
                send: false,
                source: String::new(),
                id: String::new(),
                conversation: String::new(),
                span: None,
            }),
            Err(error) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&token);
                Err(error)
            }
        }
    }

    /// The verdict of a send as the store has it, once dedupe has applied
    /// its (source, id): the committed message, or a conflict if that
    /// identity was used for a message in another conversation (the two
    /// are different events; acking this one with the other's seq would
    /// ack a message that is stored nowhere).
    pub(crate) async fn committed(
        &self,
        source: &str,
        id: &str,
        conversation: &str,
    ) -> Option<Result<Verdict, Refusal>> {
        let store = self.conversations.clone();
        let (source, event_id) = (source.to_string(), id.to_string());
        let found = tokio::task::spawn_blocking(move || {
            let record = store.idempotency(&source, &event_id).ok().flatten()?;
            store
                .message(&record.conversation_id, record.seq?)
                .ok()
                .flatten()
        })
        .await
        .ok()
        .flatten()?;
        if found.conversation_id != conversation {
            return Some(Err(Refusal::new(
                "conflict",
                format!("client_msg_id {id} was already used for another message; send this one with a new id"),
            )));
        }
        Some(Ok(Verdict::committed(
            &found.message_id,
            &found.conversation_id,
            found.seq,
        )))
    }

    pub(crate) async fn await_committed(
        &self,
        source: &str,
        id: &str,
        conversation: &str,
    ) -> Result<Verdict, Refusal> {
        let deadline = tokio::time::Instant::now() + self.config.ack_timeout;
        loop {
            if let Some(verdict) = self.committed(source, id, conversation).await {
                return verdict;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Refusal::new(
                    "unavailable",
                    "the original send is not committed yet; retry with the same id",
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub(crate) fn storage_full(subject: &str, error: &str) -> Refusal {
    metrics::counter!("im_gateway_storage_full_total").increment(1);
    tracing::error!(subject, error, "the event log refuses new events: a stream is full (max_bytes); free space or raise the bound (IM_STREAM_MAX_BYTES / schemas/streams.json)");
    Refusal::new(
        "storage_full",
        "the server cannot store new messages right now (its event log is full); nothing was stored; retry later with the same id",
    )
}

pub(crate) fn unavailable(error: String) -> Refusal {
    Refusal::new("unavailable", format!("{error}; retry with the same id"))
}

/// A published event whose verdict is still to come.
pub struct Pending {
    token: String,
    receiver: oneshot::Receiver<bytes::Bytes>,
    duplicate: bool,
    /// An `im.message.send`: its commit can be read from the store.
    send: bool,
    source: String,
    id: String,
    /// The conversation a send is for: a stored commit of its (source, id)
    /// in another conversation is another event.
    conversation: String,
    /// The gateway's span of the event (tracing on), ended with the verdict.
    span: Option<tracing::Span>,
}

/// A structured CloudEvent as part of `trace` (the distributed-tracing
/// extension attributes).
pub fn set_trace(event: &mut Value, trace: &im_events::Trace) {
    event["traceparent"] = json!(trace.traceparent);
    match &trace.tracestate {
        Some(state) => event["tracestate"] = json!(state),
        None => {
            if let Some(object) = event.as_object_mut() {
                object.remove("tracestate");
            }
        }
    }
}

impl Pending {
    pub async fn finish(self, gateway: &Gateway) -> Result<Verdict, Refusal> {
        let result = if self.duplicate {
            // JetStream dropped a quick resend: the original carries the
            // answer. Find it in the store once dedupe has applied it.
            gateway
                .await_committed(&self.source, &self.id, &self.conversation)
                .await
        } else {
            // The verdict travels on core NATS: if it is lost (the
            // gateway's connection moved to another node at that moment),
            // a committed send is found in the store instead.
            let (source, id, send) = (self.source.clone(), self.id.clone(), self.send);
            let conversation = self.conversation.clone();
            let from_store = async {
                if !send {
                    return std::future::pending().await;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                loop {
                    if let Some(verdict) = gateway.committed(&source, &id, &conversation).await {
                        return verdict;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            };
            let verdict = tokio::select! {
                verdict = tokio::time::timeout(gateway.config.ack_timeout, self.receiver) => verdict.map(|reply| reply.map(|reply| {
                    match serde_json::from_slice::<Verdict>(&reply) {
                        Ok(verdict) if verdict.ok => Ok(verdict),
                        Ok(verdict) => Err(Refusal::new(
                            verdict.code.unwrap_or_else(|| "rejected".to_string()),
                            verdict.reason.unwrap_or_default(),
                        )),
                        Err(error) => Err(Refusal::new("internal", format!("unreadable verdict: {error}"))),
                    }
                })),
                verdict = from_store => Ok(Ok(verdict)),
            };
            match verdict {
                Ok(Ok(verdict)) => verdict,
                _ => Err(unavailable(format!(
                    "no answer from the pipeline within {:?}",
                    gateway.config.ack_timeout
                ))),
            }
        };
        gateway
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
        result
    }
}
