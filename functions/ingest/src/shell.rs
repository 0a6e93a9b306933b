//! The shell: the batch handler over JetStream and run(), wiring NATS and
//! the stores to the pure core. The `shell` feature (the binary needs it).

use super::*;

pub struct Ingest {
    pub js: async_nats::jetstream::Context,
    pub config: Config,
}

impl BatchHandler for Ingest {
    async fn handle(
        &self,
        claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut items = Vec::new();
        let mut copies = Vec::new();
        // Until the batch is published.
        let mut spans = im_runtime::trace::Spans::default();
        for message in &batch {
            match route(message, &self.config) {
                Ok(Route::Rekey { subject }) => {
                    copies.push(rekeyed(message, subject));
                    outcomes.push(Outcome::Done);
                }
                Ok(Route::Accept {
                    subject,
                    event: accepted,
                }) => {
                    let partition =
                        im_events::subjects::partition_of_subject(&subject).unwrap_or_default();
                    items.push((
                        partition,
                        AcceptedItem {
                            event: {
                                let trace = spans.event(
                                    FUNCTION,
                                    accepted.trace().as_ref(),
                                    Some(claim.partition),
                                    None,
                                    batch.len(),
                                );
                                accepted.with_trace(trace)
                            },
                            reply_to: reply_subject(&message.headers).map(str::to_string),
                        },
                    ));
                    outcomes.push(Outcome::Done);
                }
                Err(error) => {
                    if let Some(subject) = reply_subject(&message.headers) {
                        reply(&self.js.client(), subject, &refusal(&error)).await;
                    }
                    outcomes.push(Outcome::Reject {
                        error,
                        identity: identity_of(message),
                    })
                }
            }
        }
        // One connection publishes in order, so a conversation's events keep
        // the order they had in IM_INGEST.
        let mut outgoing = envelopes(items).map_err(|e| HandlerError::Transient(e.to_string()))?;
        if !copies.is_empty() {
            metrics::counter!("im_ingest_rekeyed_total").increment(copies.len() as u64);
        }
        outgoing.extend(copies);
        publish_all(&self.js, outgoing)
            .await
            .map_err(HandlerError::from)?;
        drop(spans);
        Ok(outcomes)
    }
}

pub async fn run(
    client: async_nats::Client,
    config: Config,
    instance: String,
    lease_ttl: std::time::Duration,
    shutdown: im_runtime::Shutdown,
) -> im_runtime::Result<()> {
    let handler = Arc::new(Ingest {
        js: async_nats::jetstream::new(client.clone()),
        config,
    });
    im_runtime::run_function(client, FUNCTION, instance, lease_ttl, handler, shutdown).await
}
