//! The shell: the batch handler over JetStream and run(), wiring NATS to
//! the pure core. The `shell` feature (the binary needs it).

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
        let mut copies = Vec::new();
        // Until the batch is published.
        let mut spans = im_runtime::trace::Spans::default();
        for message in &batch {
            match route(message, &self.config) {
                Ok((subject, parent)) => {
                    spans.event(
                        FUNCTION,
                        parent.as_ref(),
                        Some(claim.partition),
                        None,
                        batch.len(),
                    );
                    copies.push(rekeyed(message, subject));
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
        if !copies.is_empty() {
            metrics::counter!("im_ingest_rekeyed_total").increment(copies.len() as u64);
        }
        // One connection publishes in order, so the copies keep the order
        // their originals had in IM_INGEST.
        publish_all(&self.js, copies)
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
