//! The pure core of `offline`: counting deliveries into pending state,
//! flushing it into outbox records, settling provider answers.

use super::*;

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
    /// The wait before attempt `attempts + 1` of notification `id`:
    /// exponential, capped, jittered per notification (so a provider's
    /// outage does not bring every queued one back at once), and never
    /// shorter than the provider's `Retry-After`.
    pub fn retry_delay_ms(&self, id: &str, attempts: u32, retry_after: Option<Duration>) -> i64 {
        let backoff = im_runtime::backoff::Backoff::new(
            Duration::from_millis(self.retry_base_ms.max(0) as u64),
            Duration::from_millis(self.retry_cap_ms.max(0) as u64),
        )
        .delay(u64::from(attempts), id)
        .as_millis() as i64;
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
                next.last_message = Some(message.into());
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

pub(super) fn preview(message: Option<&im_events::LastMessage>) -> String {
    let text = match message {
        Some(message) => match message.kind {
            im_events::MessageKind::Text => message.body["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            im_events::MessageKind::Image => "[image]".to_string(),
            im_events::MessageKind::File => "[file]".to_string(),
            im_events::MessageKind::Custom => "[message]".to_string(),
        },
        None => "[message]".to_string(),
    };
    let mut short: String = text.chars().take(120).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// Title and body of a notification: "Project X" / "3 new messages".
pub fn texts(state: &NotifyState, kind: ConversationKind, title: Option<&str>) -> (String, String) {
    let last = state.last_message.as_ref();
    let sender = last.map_or("someone", |m| m.sender_id.as_str()).to_string();
    let heading = match kind {
        ConversationKind::Group => title.unwrap_or(&state.conversation_id).to_string(),
        ConversationKind::Direct => sender.clone(),
    };
    let body = match (state.pending, kind, state.mentioned) {
        (1, _, true) => format!("{sender} mentioned you: {}", preview(last)),
        (1, ConversationKind::Group, false) => format!("{sender}: {}", preview(last)),
        (1, ConversationKind::Direct, false) => preview(last),
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
                now_ms + settings.retry_delay_ms(&record.id, attempts, *after),
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
pub(super) struct Counting<'a> {
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
