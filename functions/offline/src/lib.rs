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

pub mod providers;
pub mod registry;

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

/// How notifications are coalesced and retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// At most one notification per conversation per window.
    pub window_ms: i64,
    /// Messages older than this when counted are not notified (replay of
    /// old streams, a long outage): a stale notification helps nobody.
    pub stale_ms: i64,
    /// Send attempts before a notification is dead-lettered.
    pub max_attempts: u32,
    pub retry_base_ms: i64,
    pub retry_cap_ms: i64,
    /// Presence entries count as online this long after their refresh.
    pub presence_ttl_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window_ms: 3_000,
            stale_ms: 3_600_000,
            max_attempts: 6,
            retry_base_ms: 1_000,
            retry_cap_ms: 300_000,
            presence_ttl_ms: 30_000,
        }
    }
}

impl Settings {
    /// The wait before attempt `attempts + 1`: exponential, capped, and never
    /// shorter than the provider's `Retry-After`.
    pub fn retry_delay_ms(&self, attempts: u32, retry_after: Option<Duration>) -> i64 {
        let exponent = attempts.saturating_sub(1).min(20);
        let backoff = self
            .retry_base_ms
            .saturating_mul(1i64 << exponent)
            .min(self.retry_cap_ms);
        // Honour the provider's Retry-After, up to an hour.
        let asked = retry_after
            .map(|d| d.as_millis().min(3_600_000) as i64)
            .unwrap_or(0);
        backoff.max(asked)
    }
}

/// Pure: what one delivered event changes in `user`'s state for its
/// conversation; `None` if nothing.
pub fn accumulate(
    state: Option<&NotifyState>,
    user: &str,
    partition: u32,
    event: &TimelineEvent,
    published_ms: i64,
    now_ms: i64,
    settings: &Settings,
) -> Option<NotifyState> {
    let fresh = || NotifyState {
        user_id: user.to_string(),
        conversation_id: event.conversation_id().to_string(),
        partition,
        counted_seq: 0,
        pending: 0,
        first_seq: 0,
        last_seq: 0,
        mentioned: false,
        due_ms: 0,
        last_message: None,
    };
    let clear = |state: &mut NotifyState| {
        state.pending = 0;
        state.mentioned = false;
        state.last_message = None;
    };
    match event {
        TimelineEvent::Committed(message) => {
            let mut next = state.cloned().unwrap_or_else(fresh);
            if message.seq <= next.counted_seq {
                return None;
            }
            next.counted_seq = message.seq;
            next.partition = partition;
            if message.sender_id == user {
                // Writing in the conversation: the user has seen it.
                clear(&mut next);
            } else if now_ms - published_ms <= settings.stale_ms {
                if next.pending == 0 {
                    next.first_seq = message.seq;
                    next.due_ms = published_ms + settings.window_ms;
                    next.mentioned = false;
                }
                next.pending += 1;
                next.last_seq = message.seq;
                next.mentioned |= message.mentions.iter().any(|m| m == user);
                next.last_message = Some(json!({
                    "sender_id": message.sender_id, "kind": message.kind, "body": message.body,
                }));
            }
            Some(next)
        }
        // Joining (or a switch back to write diffusion) starts the count
        // at the change: earlier seqs never reach this user, so they are
        // not waited for.
        TimelineEvent::Changed(change)
            if change.added.iter().any(|u| u == user)
                || (change.mode_changed && change.members.iter().any(|u| u == user)) =>
        {
            let mut next = state.cloned().unwrap_or_else(fresh);
            if change.at_seq <= next.counted_seq {
                return None;
            }
            next.counted_seq = change.at_seq;
            Some(next)
        }
        TimelineEvent::Read(read) if read.user_id == user => {
            let state = state?;
            if state.pending == 0 || read.seq < state.last_seq {
                return None;
            }
            let mut next = state.clone();
            clear(&mut next);
            Some(next)
        }
        _ => None,
    }
}

/// A registered device of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceToken {
    pub device_id: String,
    pub provider: String,
    pub token: String,
}

/// What flushing one pending state needs to know, read by the shell.
#[derive(Debug, Clone, PartialEq)]
pub struct FlushContext {
    pub devices: Vec<DeviceToken>,
    /// Devices of the user that are connected now.
    pub online: HashSet<String>,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub muted_until_ms: Option<i64>,
    /// The user's read mark in the conversation.
    pub read_seq: u64,
    /// The user's total unread count, with this state's messages counted.
    pub badge: u64,
    pub now_ms: i64,
}

/// The id of the notification for (user, conversation, last seq, device):
/// a UUID (APNs wants one), the same however often it is computed.
pub fn notification_id(user: &str, conversation: &str, last_seq: u64, device: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8e6f_2c1d_4b7a_4f0e_a3c2_91d5_0b6e_7f14);
    let name = format!("{user}\u{0}{conversation}\u{0}{last_seq}\u{0}{device}");
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

fn preview(message: &Value) -> String {
    let body = &message["body"];
    let text = match message["kind"].as_str() {
        Some("text") => body["text"].as_str().unwrap_or_default().to_string(),
        Some("image") => "[image]".to_string(),
        Some("file") => "[file]".to_string(),
        _ => "[message]".to_string(),
    };
    let mut short: String = text.chars().take(120).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// Title and body of a notification: "Project X" / "3 new messages".
pub fn texts(state: &NotifyState, kind: ConversationKind, title: Option<&str>) -> (String, String) {
    let last = state.last_message.clone().unwrap_or(Value::Null);
    let sender = last["sender_id"].as_str().unwrap_or("someone").to_string();
    let heading = match kind {
        ConversationKind::Group => title.unwrap_or(&state.conversation_id).to_string(),
        ConversationKind::Direct => sender.clone(),
    };
    let body = match (state.pending, kind, state.mentioned) {
        (1, _, true) => format!("{sender} mentioned you: {}", preview(&last)),
        (1, ConversationKind::Group, false) => format!("{sender}: {}", preview(&last)),
        (1, ConversationKind::Direct, false) => preview(&last),
        (n, _, true) => format!("{n} new messages, and you were mentioned"),
        (n, _, false) => format!("{n} new messages"),
    };
    (heading, body)
}

/// Pure: the state's pending messages become one notification per offline
/// device (or one skipped record saying why none); the state is cleared.
pub fn flush(
    state: &NotifyState,
    context: &FlushContext,
) -> (NotifyState, Vec<NotificationRecord>) {
    let mut cleared = state.clone();
    cleared.pending = 0;
    cleared.mentioned = false;
    cleared.last_message = None;
    let record = |device: &str, provider: &str, payload: Value, status, answer: Option<String>| {
        NotificationRecord {
            id: notification_id(
                &state.user_id,
                &state.conversation_id,
                state.last_seq,
                device,
            ),
            user_id: state.user_id.clone(),
            device_id: device.to_string(),
            provider: provider.to_string(),
            partition: state.partition,
            conversation_id: state.conversation_id.clone(),
            payload,
            status,
            attempts: 0,
            next_attempt_ms: context.now_ms,
            created_ms: context.now_ms,
            updated_ms: context.now_ms,
            answer,
        }
    };
    let range =
        json!({"count": state.pending, "first_seq": state.first_seq, "last_seq": state.last_seq});
    let skipped = |reason: String| {
        vec![record(
            "",
            "",
            range.clone(),
            NotificationStatus::Skipped,
            Some(reason),
        )]
    };
    if state.pending == 0 {
        return (cleared, vec![]);
    }
    if context.read_seq >= state.last_seq {
        return (
            cleared,
            skipped(format!("read up to {} on another device", context.read_seq)),
        );
    }
    let muted = context
        .muted_until_ms
        .is_some_and(|until| until > context.now_ms);
    let breaks_through = state.mentioned && context.kind == ConversationKind::Group;
    if muted && !breaks_through {
        let until = im_events::rfc3339_ms(context.muted_until_ms.unwrap_or_default());
        return (cleared, skipped(format!("muted until {until}")));
    }
    let (title, body) = texts(state, context.kind, context.title.as_deref());
    let records = context
        .devices
        .iter()
        .filter(|device| !context.online.contains(&device.device_id))
        .map(|device| {
            let notice = Notice {
                notification_id: notification_id(
                    &state.user_id,
                    &state.conversation_id,
                    state.last_seq,
                    &device.device_id,
                ),
                user_id: state.user_id.clone(),
                device_id: device.device_id.clone(),
                token: device.token.clone(),
                conversation_id: state.conversation_id.clone(),
                title: title.clone(),
                body: body.clone(),
                badge: context.badge,
                count: state.pending,
                first_seq: state.first_seq,
                last_seq: state.last_seq,
                mentioned: state.mentioned,
            };
            record(
                &device.device_id,
                &device.provider,
                serde_json::to_value(&notice).unwrap_or_default(),
                NotificationStatus::Queued,
                None,
            )
        })
        .collect();
    (cleared, records)
}

/// What the shell must do besides recording a send's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowUp {
    None,
    /// The provider reported the token invalid: remove the registration.
    RemoveToken,
    /// Given up: dead-letter the notification with this reason.
    DeadLetter(String),
}

/// Pure: a send attempt's outcome becomes the record's new status.
pub fn settle(
    record: &NotificationRecord,
    outcome: &SendOutcome,
    now_ms: i64,
    settings: &Settings,
) -> (NotifyEffect, FollowUp) {
    let attempts = record.attempts + 1;
    let effect = |status, next_attempt_ms, answer: &str| NotifyEffect::Settle {
        id: record.id.clone(),
        status,
        attempts,
        next_attempt_ms,
        answer: Some(answer.to_string()),
        updated_ms: now_ms,
    };
    match outcome {
        SendOutcome::Delivered(answer) => (
            effect(NotificationStatus::Sent, now_ms, answer),
            FollowUp::None,
        ),
        SendOutcome::InvalidToken(answer) => (
            effect(NotificationStatus::Invalid, now_ms, answer),
            FollowUp::RemoveToken,
        ),
        SendOutcome::Retry { after, answer } if attempts < settings.max_attempts => (
            effect(
                NotificationStatus::Queued,
                now_ms + settings.retry_delay_ms(attempts, *after),
                answer,
            ),
            FollowUp::None,
        ),
        SendOutcome::Retry { answer, .. } => (
            effect(NotificationStatus::Dead, now_ms, answer),
            FollowUp::DeadLetter(format!(
                "{} gave up after {attempts} attempts; last answer: {answer}",
                record.provider
            )),
        ),
        SendOutcome::Failed(answer) => (
            effect(NotificationStatus::Dead, now_ms, answer),
            FollowUp::DeadLetter(format!(
                "{} refused the notification: {answer}",
                record.provider
            )),
        ),
    }
}

/// Whether a delivered message must wait for an earlier one of its
/// conversation that has not been counted yet: a write-diffusion message
/// past the next seq (every member gets every seq after joining). JetStream
/// hands a conversation's events over in order except across failures (a
/// delivery lost on its way comes back after `ack_wait`; a publish retried
/// across a leader change lands behind later ones); counting the later one
/// first would make the earlier look counted already, and its message would
/// never be notified. Pure.
pub fn waits_for_earlier(event: &TimelineEvent, state: Option<&NotifyState>) -> bool {
    match event {
        TimelineEvent::Committed(message) if message.diffusion == im_events::Diffusion::Write => {
            message.seq > state.map_or(0, |state| state.counted_seq) + 1
        }
        _ => false,
    }
}

/// Per (user, conversation) states, read once per batch and carried forward.
/// A message that must wait for an earlier one ([`waits_for_earlier`])
/// waits in the batch and is counted as soon as the earlier one is; if the
/// batch ends first it is held ([`Outcome::Hold`]) and comes back with the
/// next batch, until it has been held for [`im_runtime::hold_limit`]: then
/// the earlier one is given up and it is counted as it is.
pub fn decide_batch(
    store: &dyn NotificationStore,
    batch: &[Incoming],
    partition: u32,
    now_ms: i64,
    settings: &Settings,
) -> Result<(Vec<NotifyEffect>, Vec<Outcome>), StoreError> {
    count_batch(store, batch, partition, now_ms, settings)
        .map(|counted| (counted.effects, counted.outcomes))
}

/// [`decide_batch`], also saying whether the outbox must look again.
pub fn count_batch(
    store: &dyn NotificationStore,
    batch: &[Incoming],
    partition: u32,
    now_ms: i64,
    settings: &Settings,
) -> Result<CountedBatch, StoreError> {
    let limit = im_runtime::hold_limit().as_millis() as u64;
    let mut work = Counting {
        store,
        partition,
        now_ms,
        settings,
        states: HashMap::new(),
        changed: Vec::new(),
        outbox_affected: false,
    };
    // Per (user, conversation): (batch index, event, stored time) waiting
    // for an earlier message.
    type Waiting = Vec<(usize, TimelineEvent, i64)>;
    let mut waiting: HashMap<(String, String), Waiting> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, message) in batch.iter().enumerate() {
        let delivery: Delivery = match im_runtime::parse_internal(message, "delivery") {
            Ok(delivery) => delivery,
            Err(rejected) => {
                outcomes.push(rejected);
                continue;
            }
        };
        let patient = message.held_ms < limit;
        for data in delivery.payload.into_data() {
            if !matches!(
                data.event,
                TimelineEvent::Committed(_) | TimelineEvent::Read(_) | TimelineEvent::Changed(_)
            ) {
                continue;
            }
            let conversation = data.event.conversation_id().to_string();
            for user in &data.users {
                let key = (user.clone(), conversation.clone());
                if patient && waits_for_earlier(&data.event, work.state(&key)?) {
                    waiting.entry(key).or_default().push((
                        index,
                        data.event.clone(),
                        message.published_ms,
                    ));
                    continue;
                }
                work.count(&key, &data.event, message.published_ms)?;
                if let Some(queue) = waiting.get_mut(&key) {
                    // Count, in order, whatever no longer waits.
                    while let Some(position) = queue
                        .iter()
                        .position(|(_, event, _)| !waits_for_earlier(event, work.current(&key)))
                    {
                        let (_, event, published_ms) = queue.remove(position);
                        work.count(&key, &event, published_ms)?;
                    }
                }
            }
        }
        outcomes.push(Outcome::Done);
    }
    for (index, _, _) in waiting.values().flatten() {
        outcomes[*index] = Outcome::Hold;
    }
    let Counting {
        mut states,
        changed,
        outbox_affected,
        ..
    } = work;
    let effects: Vec<NotifyEffect> = changed
        .into_iter()
        .filter_map(|key| states.remove(&key).flatten())
        .map(NotifyEffect::PutState)
        .collect();
    Ok(CountedBatch {
        effects,
        outcomes,
        outbox_affected,
    })
}

/// What counting a batch decided.
pub struct CountedBatch {
    pub effects: Vec<NotifyEffect>,
    pub outcomes: Vec<Outcome>,
    /// A state became pending (a new due time) or stopped being: the outbox
    /// has to look again. Otherwise its timer is still right.
    pub outbox_affected: bool,
}

/// A batch's coalescing states: read once per (user, conversation) and
/// carried forward in memory.
struct Counting<'a> {
    store: &'a dyn NotificationStore,
    partition: u32,
    now_ms: i64,
    settings: &'a Settings,
    states: HashMap<(String, String), Option<NotifyState>>,
    changed: Vec<(String, String)>,
    outbox_affected: bool,
}

impl Counting<'_> {
    fn state(&mut self, key: &(String, String)) -> Result<Option<&NotifyState>, StoreError> {
        if !self.states.contains_key(key) {
            let stored = self.store.notify_state(&key.0, &key.1)?;
            self.states.insert(key.clone(), stored);
        }
        Ok(self.current(key))
    }

    fn current(&self, key: &(String, String)) -> Option<&NotifyState> {
        self.states.get(key).and_then(Option::as_ref)
    }

    fn count(
        &mut self,
        key: &(String, String),
        event: &TimelineEvent,
        published_ms: i64,
    ) -> Result<(), StoreError> {
        let (partition, now_ms, settings) = (self.partition, self.now_ms, self.settings);
        let current = self.state(key)?;
        let was_pending = current.is_some_and(|state| state.pending > 0);
        if let Some(next) = accumulate(
            current,
            &key.0,
            partition,
            event,
            published_ms,
            now_ms,
            settings,
        ) {
            // A new due time (or a cleared one): the outbox must look again.
            // One more message in a pending burst changes nothing for it.
            self.outbox_affected |= was_pending != (next.pending > 0);
            self.states.insert(key.clone(), Some(next));
            if !self.changed.contains(key) {
                self.changed.push(key.clone());
            }
        }
        Ok(())
    }
}

/// The function: stores it reads and writes, who is online, who is
/// registered, and the providers.
pub struct Offline {
    pub js: jetstream::Context,
    pub store: Arc<dyn NotificationStore>,
    pub users: Arc<dyn UserStore>,
    pub conversations: Arc<dyn ConversationStore>,
    pub presence: Arc<Mutex<Presence>>,
    pub registry: Arc<Mutex<Registry>>,
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

    async fn dead_letter(&self, record: &NotificationRecord, reason: &str) -> Result<(), String> {
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
            payload: serde_json::to_vec(record).unwrap_or_default().into(),
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
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    im_runtime::topology::ensure_streams(&js).await?;
    let presence_ttl = Duration::from_millis(settings.presence_ttl_ms.max(1) as u64);
    let presence = im_runtime::presence::follow(&js, presence_ttl).await?;
    let tokens = registry::bucket(&js).await?;
    let registry = Arc::new(Mutex::new(Registry::default()));
    // A restarted owner must not flush what is due before it knows the
    // devices: it would find none and the notification would be lost.
    let (bucket, view) = (tokens.clone(), registry.clone());
    im_runtime::presence::follow_until_current(
        "push registrations",
        Duration::from_secs(10),
        move |signal| registry::watch(bucket, view, Some(signal)),
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
