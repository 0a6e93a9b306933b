//! `unread`: each user's conversation list, unread counts and sync log
//! (partitioned by user).
//!
//! Per conversation `unread = last_seq - read_seq`; a user's own message moves
//! their `read_seq` too. Edits and recalls take no seq and change no count.
//! Every change a device must learn gets the next `sync_seq` of the user, so
//! a device syncs from its cursor. Every step is idempotent: a message at or
//! below `last_seq`, a read mark at or below `read_seq`, an edit or recall
//! already marked applied, all change nothing.

use std::collections::HashMap;
use std::sync::Arc;

use im_events::{
    Delivery, DeliveryPayload, Diffusion, PushNotice, ReadItem, SyncItem, TimelineEvent,
};
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome};
use im_store::{
    ConversationStore, StoreError, SyncRecord, UserConversation, UserEffect, UserStore,
};

pub const FUNCTION: &str = "unread";

mod batch;
mod decide;
pub use batch::*;
pub use decide::*;

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
            let (effects, outcomes) =
                decide_batch(store.as_ref(), conversations.as_deref(), &batch)?;
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
            Ok::<_, StoreError>((outcomes, push_notices(&effects, &traces)))
        })
        .await?;
        // Committed: now devices may be told, and waiting gateways answered.
        if let Some(client) = &self.client {
            for subject in &reply_subjects {
                im_runtime::publish::reply(client, subject, &im_events::Verdict::applied()).await;
            }
            let subject = im_events::subjects::push_subject(claim.partition);
            for chunk in notices {
                match serde_json::to_vec(&chunk) {
                    Ok(payload) => {
                        let _ = client.publish(subject.clone(), payload.into()).await;
                    }
                    Err(error) => tracing::error!(%error, "push notices not serializable"),
                }
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
) -> anyhow::Result<()> {
    let handler = Arc::new(Unread {
        retention,
        store,
        client: Some(client.clone()),
        conversations: Some(conversations),
    });
    im_runtime::run_function(client, FUNCTION, instance, lease_ttl, handler, shutdown).await
}

#[cfg(test)]
mod compaction_tests {
    use super::*;

    fn appended(user: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<UserEffect> {
        seqs.map(|n| {
            UserEffect::AppendSync(SyncRecord {
                user_id: user.into(),
                sync_seq: n,
                event_key: format!("k{n}"),
                item: SyncItem::Read(im_events::ReadItem {
                    conversation_id: "c".into(),
                    seq: n,
                }),
            })
        })
        .collect()
    }

    #[test]
    fn a_log_is_compacted_once_every_so_many_appends_past_what_it_keeps() {
        assert!(compactions(&appended("bob", 1..=100), 100, 10).is_empty());
        assert_eq!(
            compactions(&appended("bob", 101..=125), 100, 10),
            vec![("bob".to_string(), 10), ("bob".to_string(), 20)]
        );
        let mut both = appended("bob", 105..=110);
        both.extend(appended("ann", 108..=111));
        assert_eq!(
            compactions(&both, 100, 10),
            vec![("bob".to_string(), 10), ("ann".to_string(), 10)]
        );
        assert_eq!(SyncRetention::keeping(10_000).every, 1_000);
        assert_eq!(SyncRetention::keeping(3).every, 1);
    }
}

#[cfg(test)]
mod tests;
