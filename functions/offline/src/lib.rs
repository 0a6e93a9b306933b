//! `offline`: devices with no connection get a notification through their
//! push provider (APNs, FCM, Huawei, Xiaomi, or the operator's webhook),
//! one per conversation per coalescing window, honouring mutes.
//!
//! Partitioned by user, on its own durable consumer of `IM_DELIVERY`:
//!
//! 1. **Count** ([`accumulate`]): each delivered message adds to the user's
//!    pending state for its conversation (count, seq range, mention, due
//!    time = the first message's stream time + window). `counted_seq` makes
//!    redelivery and replay change nothing; the user's own message or read
//!    mark clears what is pending. Committed with the batch's ack.
//! 2. **Flush** ([`flush`]), by the partition owner when the window closes:
//!    one outbox record per registered device that is not online (presence),
//!    unless the conversation is muted (a mention breaks through a group
//!    mute) or was read meanwhile. The record's id is derived from (user,
//!    conversation, last seq, device), so a flush can never enqueue twice.
//! 3. **Send** ([`settle`]): outbox records go to their provider
//!    concurrently (bounded per provider); 429/5xx retry with exponential
//!    backoff honouring `Retry-After`, an invalid token is removed from the
//!    registry, and a notification that keeps failing or is refused is
//!    dead-lettered on `im.dlq.offline` with the provider's answer. None of
//!    this holds up other notifications: retries are scheduled, not awaited.
//!
//! The outbox doubles as the notification log (`imctl notifications`,
//! `GET /v1/notifications`). A crash between a provider's acceptance and the
//! log write resends that one notification with the same id (`apns-id`,
//! collapse keys, the webhook's `webhook-id`), so the device shows it once.

mod decide;
pub mod providers;
pub mod registry;

pub use decide::*;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use im_events::{ConversationKind, Delivery, TimelineEvent};
use im_runtime::presence::Presence;
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome, Shutdown};
use im_store::{
    unread_summary, ConversationStore, NotificationRecord, NotificationStatus, NotificationStore,
    NotifyEffect, NotifyState, StoreError, UserStore,
};
use serde_json::{json, Value};
use tokio::sync::Notify;

use providers::{Notice, Providers, SendOutcome};
use registry::Registry;

pub const FUNCTION: &str = "offline";

/// The function: stores it reads and writes, who is online, who is
/// registered, and the providers.
pub struct Offline {
    pub js: jetstream::Context,
    pub store: Arc<dyn NotificationStore>,
    pub users: Arc<dyn UserStore>,
    pub conversations: Arc<dyn ConversationStore>,
    pub presence: Arc<Mutex<Presence>>,
    pub registry: Arc<Mutex<Registry>>,
    /// The registry holds what the bucket held (once true, it stays): until
    /// then nothing is flushed, since a flush finding no devices clears the
    /// state and the notification would be lost.
    pub devices_known: Arc<std::sync::atomic::AtomicBool>,
    pub tokens: kv::Store,
    pub providers: Arc<Providers>,
    pub settings: Settings,
    partitions: Mutex<HashMap<u32, Arc<PartitionSync>>>,
}

/// What the batch handler and the outbox task of one partition share.
#[derive(Default)]
struct PartitionSync {
    /// Wakes the outbox when a batch may have made something due.
    wake: Notify,
    /// Held across read–decide–write of the coalescing states: a flush
    /// clearing a state and a batch adding to it must not interleave, or
    /// the batch writes back what the flush just cleared and the same
    /// messages are notified twice.
    writes: Mutex<()>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Offline {
    fn partition_sync(&self, partition: u32) -> Arc<PartitionSync> {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(partition)
            .or_default()
            .clone()
    }

    /// The flush context of one due state (blocking store reads).
    fn context_for(&self, state: &NotifyState, now: i64) -> Result<FlushContext, StoreError> {
        let devices = self
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .devices(&state.user_id);
        let online = {
            let presence = self.presence.lock().unwrap_or_else(|p| p.into_inner());
            devices
                .iter()
                .filter(|d| {
                    presence.device_online(
                        &state.user_id,
                        &d.device_id,
                        now,
                        self.settings.presence_ttl_ms,
                    )
                })
                .map(|d| d.device_id.clone())
                .collect()
        };
        let conversation = self.conversations.conversation(&state.conversation_id)?;
        let summary = unread_summary(
            self.users.as_ref(),
            self.conversations.as_ref(),
            &state.user_id,
        )?;
        let row = summary
            .items
            .iter()
            .find(|row| row.conversation_id == state.conversation_id);
        // unread may not have applied these messages yet: count them anyway.
        let (read_seq, muted_until_ms, badge) = match row {
            Some(row) => {
                let counted = row
                    .last_seq
                    .max(state.last_seq)
                    .saturating_sub(row.read_seq);
                (
                    row.read_seq,
                    row.muted_until_ms,
                    summary.total_unread - row.unread() + counted,
                )
            }
            None => (0, None, summary.total_unread + state.pending),
        };
        Ok(FlushContext {
            devices,
            online,
            kind: conversation
                .as_ref()
                .map(|c| c.kind)
                .unwrap_or(ConversationKind::Group),
            title: conversation.and_then(|c| c.title),
            muted_until_ms,
            read_seq,
            badge,
            now_ms: now,
        })
    }

    /// Turn the partition's due states into outbox records.
    fn flush_due(&self, claim: &Claim) -> Result<usize, StoreError> {
        if !self
            .devices_known
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(StoreError::Backend(
                "the push registrations are not loaded yet; nothing is flushed until they are"
                    .into(),
            ));
        }
        let sync = self.partition_sync(claim.partition);
        let _writes = sync.writes.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let due = self.store.due_states(claim.partition, now, 200)?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut effects = Vec::new();
        for state in &due {
            let context = self.context_for(state, now)?;
            let (cleared, records) = flush(state, &context);
            effects.push(NotifyEffect::PutState(cleared));
            effects.extend(records.into_iter().map(NotifyEffect::Enqueue));
        }
        self.store.apply(&claim.fence(), &effects)?;
        Ok(due.len())
    }

    /// Record outcomes; remove invalid tokens and dead-letter given-up
    /// notifications first, so a crash repeats those steps, never skips them.
    async fn record_outcomes(
        &self,
        claim: &Claim,
        results: Vec<(NotificationRecord, SendOutcome)>,
    ) -> Result<(), HandlerError> {
        let now = now_ms();
        let mut effects = Vec::with_capacity(results.len());
        for (record, outcome) in &results {
            let (effect, follow_up) = settle(record, outcome, now, &self.settings);
            match follow_up {
                FollowUp::None => {}
                FollowUp::RemoveToken => self.remove_token(record).await,
                FollowUp::DeadLetter(reason) => {
                    if let Err(error) = self.dead_letter(record, &reason).await {
                        tracing::warn!(%error, id = %record.id, "dead letter not published; will retry the notification");
                        continue;
                    }
                    metrics::counter!("im_notifications_dead_lettered_total").increment(1);
                }
            }
            effects.push(effect);
        }
        let store = self.store.clone();
        let fence = claim.fence();
        im_runtime::blocking(move || store.apply(&fence, &effects)).await
    }

    async fn remove_token(&self, record: &NotificationRecord) {
        let token = record.payload["token"].as_str().unwrap_or_default();
        let revision = self
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .revision_holding(&record.user_id, &record.device_id, token);
        let Some(revision) = revision else { return };
        let key = im_events::subjects::device_key(&record.user_id, &record.device_id);
        // Only if it still holds this token: a device that registered anew
        // meanwhile keeps its new one.
        match self
            .tokens
            .delete_expect_revision(&key, Some(revision))
            .await
        {
            Ok(()) => {
                tracing::info!(user = %record.user_id, device = %record.device_id, provider = %record.provider, "removed a push token the provider reported invalid");
                self.registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&record.user_id, &record.device_id, revision);
            }
            Err(error) => {
                tracing::info!(%error, "push token not removed (changed meanwhile?)")
            }
        }
    }

    async fn dead_letter(
        &self,
        record: &NotificationRecord,
        reason: &str,
    ) -> Result<(), im_runtime::publish::PublishError> {
        let letter = im_runtime::dlq::DeadLetter {
            function: FUNCTION.to_string(),
            code: im_events::ErrorCode::ProviderFailed,
            reason: reason.to_string(),
            original_subject: format!("im.notify.{}", record.provider),
            original_headers: vec![
                ("Im-Notification-Id".into(), record.id.clone()),
                ("Im-Provider".into(), record.provider.clone()),
                ("Im-User".into(), record.user_id.clone()),
                ("Im-Device".into(), record.device_id.clone()),
            ],
            payload: serde_json::to_vec(record)
                .map_err(|error| im_runtime::publish::PublishError::Failed(error.to_string()))?
                .into(),
            stream: "offline-outbox".into(),
            stream_seq: 0,
            delivered: record.attempts as i64 + 1,
            source: None,
            event_id: None,
            event_type: None,
        };
        let headers = im_runtime::dlq::dead_letter_headers(&letter, now_ms());
        im_runtime::publish::publish_all(
            &self.js,
            vec![im_runtime::publish::Outgoing {
                subject: im_events::subjects::dlq_subject(FUNCTION),
                message_id: Some(format!("dlq:notification:{}", record.id)),
                headers: Some(headers),
                payload: letter.payload.clone(),
            }],
        )
        .await
    }

    /// `imctl dlq redrive` of a notification: a dead one is queued again
    /// (attempts from zero); one already sent or queued is left alone.
    async fn redrive(&self, claim: &Claim, request: &[u8]) -> Value {
        let Some(id) = serde_json::from_slice::<Value>(request)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
        else {
            return json!({"ok": false, "reason": "a redrive request is {\"id\": …}"});
        };
        let (store, fence) = (self.store.clone(), claim.fence());
        let result = im_runtime::blocking(move || {
            let Some(record) = store.notification(&id)? else {
                return Ok(json!({"ok": false, "reason": format!("no notification {id}")}));
            };
            let status = match record.status {
                NotificationStatus::Dead => {
                    store.apply(
                        &fence,
                        &[NotifyEffect::Settle {
                            id: id.clone(),
                            status: NotificationStatus::Queued,
                            attempts: 0,
                            next_attempt_ms: now_ms(),
                            answer: record.answer.clone(),
                            updated_ms: now_ms(),
                        }],
                    )?;
                    "queued"
                }
                NotificationStatus::Sent => "already sent",
                NotificationStatus::Queued => "queued",
                NotificationStatus::Invalid => "token invalid (removed); not sent",
                NotificationStatus::Skipped => "skipped; not sent",
            };
            Ok(json!({"ok": true, "status": status}))
        })
        .await;
        self.partition_sync(claim.partition).wake.notify_one();
        result.unwrap_or_else(|error| json!({"ok": false, "reason": error.to_string()}))
    }

    /// The owner's loop for one partition: flush due states, send ready
    /// notifications concurrently, record outcomes as they come.
    async fn run_outbox(self: &Arc<Self>, claim: Claim, shutdown: Shutdown) {
        let sync = self.partition_sync(claim.partition);
        let (results_tx, mut results_rx) =
            tokio::sync::mpsc::unbounded_channel::<(NotificationRecord, SendOutcome)>();
        let mut in_flight: HashSet<String> = HashSet::new();
        let mut fenced = false;
        let client = self.js.client();
        let mut redrives = match client
            .subscribe(im_events::subjects::offline_redrive_subject(
                claim.partition,
            ))
            .await
        {
            Ok(subscription) => Some(subscription),
            Err(error) => {
                tracing::warn!(%error, "cannot take redrive requests for this partition");
                None
            }
        };
        while claim.is_valid() && !shutdown.is_triggered() && !fenced {
            let this = self.clone();
            let owner = claim.clone();
            let flushed = im_runtime::blocking(move || this.flush_due(&owner)).await;
            if let Err(HandlerError::Fenced(reason)) = &flushed {
                tracing::warn!(%reason, "outbox fenced, giving the partition up");
                claim.revoke();
                break;
            } else if let Err(error) = &flushed {
                tracing::warn!(%error, "flush failed, retrying");
            }
            let (store, partition) = (self.store.clone(), claim.partition);
            let ready =
                im_runtime::blocking(move || store.ready_notifications(partition, now_ms(), 512))
                    .await
                    .unwrap_or_default();
            for record in ready {
                if !in_flight.insert(record.id.clone()) {
                    continue;
                }
                let (this, results) = (self.clone(), results_tx.clone());
                tokio::spawn(async move {
                    let outcome = match serde_json::from_value::<Notice>(record.payload.clone()) {
                        Ok(notice) => this.providers.send(&record.provider, &notice).await,
                        Err(error) => {
                            SendOutcome::Failed(format!("notification payload unreadable: {error}"))
                        }
                    };
                    let _ = results.send((record, outcome));
                });
            }
            let (store, partition) = (self.store.clone(), claim.partition);
            let wake_at = im_runtime::blocking(move || store.next_wakeup_ms(partition))
                .await
                .ok()
                .flatten();
            let wait = wake_at
                .map(|at| (at - now_ms()).clamp(5, 1_000))
                .unwrap_or(1_000);
            // A flush that failed is not tried again at once (what is due
            // stays due, and the warning would repeat every few ms).
            let wait = if flushed.is_err() {
                wait.max(500)
            } else {
                wait
            };
            tokio::select! {
                Some(first) = results_rx.recv() => {
                    let mut results = vec![first];
                    while let Ok(more) = results_rx.try_recv() {
                        results.push(more);
                    }
                    for (record, _) in &results {
                        in_flight.remove(&record.id);
                    }
                    match self.record_outcomes(&claim, results).await {
                        Err(HandlerError::Fenced(reason)) => {
                            tracing::warn!(%reason, "outbox fenced, giving the partition up");
                            claim.revoke();
                            fenced = true;
                        }
                        Err(error) => tracing::warn!(%error, "outcomes not recorded; the notifications will be sent again"),
                        Ok(()) => {}
                    }
                }
                Some(request) = async {
                    match redrives.as_mut() {
                        Some(subscription) => futures::StreamExt::next(subscription).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let answer = self.redrive(&claim, &request.payload).await;
                    if let Some(reply) = request.reply {
                        let _ = client.publish(reply, answer.to_string().into()).await;
                    }
                }
                _ = sync.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                _ = shutdown.wait() => {}
            }
        }
        // Record what is still in flight, so a clean stop repeats nothing.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
        let mut results = Vec::new();
        while !in_flight.is_empty() && !fenced {
            match tokio::time::timeout_at(deadline, results_rx.recv()).await {
                Ok(Some(result)) => {
                    in_flight.remove(&result.0.id);
                    results.push(result);
                }
                _ => break,
            }
        }
        if !results.is_empty() {
            let _ = self.record_outcomes(&claim, results).await;
        }
    }
}

/// The function as the consumer runtime drives it.
pub struct Handler(pub Arc<Offline>);

impl BatchHandler for Handler {
    async fn handle(
        &self,
        claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let store = self.0.store.clone();
        let fence = claim.fence();
        let (partition, settings) = (claim.partition, self.0.settings);
        let sync = self.0.partition_sync(partition);
        // Until the batch is counted.
        let (spans, _) = im_runtime::trace::delivery_spans(FUNCTION, partition, &batch);
        let counted = im_runtime::blocking(move || {
            let _writes = sync.writes.lock().unwrap_or_else(|p| p.into_inner());
            let counted = count_batch(store.as_ref(), &batch, partition, now_ms(), &settings)?;
            if !counted.effects.is_empty() {
                store.apply(&fence, &counted.effects)?;
            }
            Ok(counted)
        })
        .await?;
        if counted.outbox_affected {
            self.0.partition_sync(claim.partition).wake.notify_one();
        }
        drop(spans);
        Ok(counted.outcomes)
    }

    fn owner_task(
        &self,
        claim: Claim,
        shutdown: Shutdown,
    ) -> impl std::future::Future<Output = ()> + Send {
        let this = self.0.clone();
        async move { this.run_outbox(claim, shutdown).await }
    }
}

/// Run the function until `shutdown`.
pub async fn run(
    client: async_nats::Client,
    stores: (
        Arc<dyn NotificationStore>,
        Arc<dyn UserStore>,
        Arc<dyn ConversationStore>,
    ),
    providers: Providers,
    settings: Settings,
    instance: String,
    lease_ttl: Duration,
    shutdown: Shutdown,
) -> im_runtime::Result<()> {
    let js = jetstream::new(client.clone());
    im_runtime::topology::ensure_streams(&js).await?;
    let presence_ttl = Duration::from_millis(settings.presence_ttl_ms.max(1) as u64);
    let presence = im_runtime::presence::follow(&js, presence_ttl).await?;
    let tokens = registry::bucket(&js).await?;
    let registry = Arc::new(Mutex::new(Registry::default()));
    // A restarted owner must not flush what is due before it knows the
    // devices: it would find none and the notification would be lost.
    let (bucket, view) = (tokens.clone(), registry.clone());
    let devices_known = im_runtime::presence::follow_until_current(
        "push registrations",
        Duration::from_secs(10),
        move |signal| registry::watch(bucket.clone(), view.clone(), Some(signal)),
    )
    .await;
    tracing::info!(providers = ?providers.names(), "offline providers configured");
    let (store, users, conversations) = stores;
    let offline = Arc::new(Offline {
        js,
        store,
        users,
        conversations,
        presence,
        registry,
        devices_known,
        tokens,
        providers: Arc::new(providers),
        settings,
        partitions: Mutex::default(),
    });
    im_runtime::run_function(
        client,
        FUNCTION,
        instance,
        lease_ttl,
        Arc::new(Handler(offline)),
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests;
