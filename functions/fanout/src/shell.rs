//! The shell: the batch handler over JetStream and run(), wiring NATS and
//! the stores to the pure core. The `shell` feature (the binary needs it).

use super::*;

pub struct Fanout {
    pub js: async_nats::jetstream::Context,
    pub store: Arc<dyn ConversationStore>,
    pub user_partitions: u32,
}

impl BatchHandler for Fanout {
    async fn handle(
        &self,
        claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let store = self.store.clone();
        let partitions = self.user_partitions;
        let partition = claim.partition;
        let (outgoing, outcomes, group_pushes, spans) = im_runtime::blocking(move || {
            // Until the batch is published.
            let mut spans = im_runtime::trace::Spans::default();
            let mut events: Vec<(TimelineEvent, Vec<String>, Option<im_events::Trace>)> =
                Vec::new();
            let mut time = String::new();
            let mut group_pushes: Vec<im_events::CommittedMessage> = Vec::new();
            let mut outcomes = Vec::with_capacity(batch.len());
            for message in &batch {
                let carried = if im_events::subjects::is_batch_subject(&message.subject) {
                    im_runtime::parse_internal::<TimelineBatch>(message, "timeline batch")
                        .map(|batch| batch.events)
                } else {
                    im_runtime::parse_internal::<Timeline>(message, "timeline event")
                        .map(|timeline| vec![timeline])
                };
                let timelines = match carried {
                    Ok(timelines) => timelines,
                    Err(rejected) => {
                        outcomes.push(rejected);
                        continue;
                    }
                };
                for timeline in timelines {
                    if let TimelineEvent::Committed(message) = &timeline.payload {
                        if message.diffusion == Diffusion::Read {
                            group_pushes.push(message.clone());
                        }
                    }
                    let users = recipients(&timeline.payload, &StoreMembers(store.as_ref()))?;
                    time = timeline.time.clone();
                    let seq = match &timeline.payload {
                        TimelineEvent::Committed(message) => Some(message.seq),
                        _ => None,
                    };
                    let trace = spans.event(
                        FUNCTION,
                        timeline.trace().as_ref(),
                        Some(partition),
                        seq,
                        batch.len(),
                    );
                    events.push((timeline.payload, users, trace));
                }
                outcomes.push(Outcome::Done);
            }
            let mut outgoing = Vec::new();
            for (subject, id, delivery) in batch_deliveries(&events, partitions, &time) {
                let payload = serde_json::to_vec(&delivery)
                    .map_err(|e| im_store::StoreError::Backend(e.to_string()))?;
                outgoing.push(Outgoing {
                    subject,
                    message_id: Some(id),
                    headers: None,
                    payload: payload.into(),
                });
            }
            Ok::<_, im_store::StoreError>((outgoing, outcomes, group_pushes, spans))
        })
        .await?;
        publish_all(&self.js, outgoing)
            .await
            .map_err(HandlerError::from)?;
        // Large groups get no per-member deliveries: tell push, which
        // notifies the members who are online (members who are not pull).
        let client = self.js.client();
        for message in group_pushes {
            let subject = im_events::subjects::GROUP_PUSH_SUBJECT.to_string();
            im_runtime::publish::publish_json(&client, subject, &message).await;
        }
        drop(spans);
        Ok(outcomes)
    }
}

pub async fn run(
    client: async_nats::Client,
    store: Arc<dyn ConversationStore>,
    instance: String,
    lease_ttl: std::time::Duration,
    shutdown: im_runtime::Shutdown,
) -> im_runtime::Result<()> {
    let handler = Arc::new(Fanout {
        js: async_nats::jetstream::new(client.clone()),
        store,
        user_partitions: im_runtime::topology::topology().partitions.user,
    });
    im_runtime::run_function(client, FUNCTION, instance, lease_ttl, handler, shutdown).await
}
