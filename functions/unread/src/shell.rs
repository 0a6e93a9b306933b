//! The shell: the batch handler over JetStream and run(), wiring NATS and
//! the stores to the pure core. The `shell` feature (the binary needs it).

use super::*;

pub struct Unread {
    /// How long each user's sync log is (none: kept whole).
    pub retention: Option<SyncRetention>,
    pub store: Arc<dyn UserStore>,
    /// Where committed sync items are announced for the push function.
    pub client: Option<async_nats::Client>,
    /// Read access to conversations, for materializing read-diffusion
    /// messages into sync logs.
    pub conversations: Option<Arc<dyn ConversationStore>>,
}

impl BatchHandler for Unread {
    async fn handle(
        &self,
        claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let store = self.store.clone();
        let conversations = self.conversations.clone();
        let fence = claim.fence();
        let reply_subjects: Vec<String> = batch
            .iter()
            .filter_map(|message| {
                im_runtime::publish::reply_subject(&message.headers).map(str::to_string)
            })
            .collect();
        let retention = self.retention;
        // Until the notices are out.
        let (spans, traces) = im_runtime::trace::delivery_spans(FUNCTION, claim.partition, &batch);
        let (outcomes, notices) = im_runtime::blocking(move || {
            let BatchDecision {
                effects,
                outcomes,
                unread_before,
            } = decide_batch(store.as_ref(), conversations.as_deref(), &batch)?;
            if !effects.is_empty() {
                store.apply(&fence, &effects)?;
            }
            if let Some(retention) = retention {
                for (user, through) in compactions(&effects, retention.keep, retention.every) {
                    // After the commit, and idempotent: a redelivered batch
                    // compacts to the same floor.
                    store.compact_sync(&user, through)?;
                    metrics::counter!("im_unread_sync_compactions_total").increment(1);
                }
            }
            // The counts the devices are told, read once per user here
            // after the commit (push would read them again per notice).
            // Unreadable, push reads them itself: the commit stands.
            let counts = conversations.as_deref().and_then(|conversations| {
                let keys = counts_to_push(&effects, &unread_before);
                match read_counts(store.as_ref(), conversations, &keys) {
                    Ok(counts) => Some(counts),
                    Err(error) => {
                        tracing::warn!(%error, "unread counts not readable after the commit; push reads them");
                        None
                    }
                }
            });
            Ok::<_, StoreError>((outcomes, push_notices(&effects, &traces, counts.as_ref())))
        })
        .await?;
        // Committed: now devices may be told, and waiting gateways answered.
        if let Some(client) = &self.client {
            for subject in &reply_subjects {
                im_runtime::publish::reply(client, subject, &im_events::Verdict::applied()).await;
            }
            let subject = im_events::subjects::push_subject(claim.partition);
            for chunk in notices {
                im_runtime::publish::publish_json(client, subject.clone(), &chunk).await;
            }
        }
        drop(spans);
        Ok(outcomes)
    }
}

pub async fn run(
    client: async_nats::Client,
    store: Arc<dyn UserStore>,
    conversations: Arc<dyn ConversationStore>,
    instance: String,
    lease_ttl: std::time::Duration,
    retention: Option<SyncRetention>,
    shutdown: im_runtime::Shutdown,
) -> im_runtime::Result<()> {
    let handler = Arc::new(Unread {
        retention,
        store,
        client: Some(client.clone()),
        conversations: Some(conversations),
    });
    im_runtime::run_function(client, FUNCTION, instance, lease_ttl, handler, shutdown).await
}
