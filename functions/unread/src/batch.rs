//! A batch of timeline events for one user partition: loading what it
//! needs, deciding in order over an overlay, materializing read-diffusion
//! messages, compacting sync logs, the notices push gets.

use super::*;

/// A batch's state: rows and sync heads read once and carried forward.
pub(super) struct Work<'a> {
    store: &'a dyn UserStore,
    states: HashMap<(String, String), UserState>,
    sync_heads: HashMap<String, u64>,
    applied_in_batch: std::collections::HashSet<(String, String)>,
    effects: Vec<UserEffect>,
    /// The unread count of each write-diffusion row as the batch found it
    /// (0 where there was none).
    unread_before: HashMap<(String, String), u64>,
}

impl Work<'_> {
    fn state(&mut self, key: &(String, String)) -> Result<&mut UserState, StoreError> {
        if !self.states.contains_key(key) {
            let row = self.store.user_conversation(&key.0, &key.1)?;
            // No row yet: nothing unread in it yet.
            match row.as_ref() {
                None => {
                    self.unread_before.insert(key.clone(), 0);
                }
                Some(row) if row.diffusion == Diffusion::Write => {
                    self.unread_before.insert(key.clone(), row.unread());
                }
                Some(_) => {}
            }
            self.states.insert(
                key.clone(),
                UserState {
                    row,
                    last_sync_seq: 0,
                    applied: false,
                },
            );
        }
        Ok(self.states.get_mut(key).expect("inserted above"))
    }

    fn waits(&mut self, key: &(String, String), event: &TimelineEvent) -> Result<bool, StoreError> {
        Ok(waits_for_earlier(event, self.state(key)?.row.as_ref()))
    }

    fn apply(&mut self, key: &(String, String), event: &TimelineEvent) -> Result<(), StoreError> {
        let user = &key.0;
        let head = match self.sync_heads.get(user) {
            Some(head) => *head,
            None => self.store.last_sync_seq(user)?,
        };
        let applied = if needs_applied_check(event) {
            let effect_key = (user.clone(), event.effect_key());
            let applied = self.applied_in_batch.contains(&effect_key)
                || self.store.effect_applied(user, &effect_key.1)?;
            self.applied_in_batch.insert(effect_key);
            applied
        } else {
            false
        };
        let state = self.state(key)?;
        state.last_sync_seq = head;
        state.applied = applied;
        let (decided, mut next) = decide(user, event, state);
        next.applied = false;
        self.sync_heads.insert(user.clone(), next.last_sync_seq);
        self.states.insert(key.clone(), next);
        self.effects.extend(decided);
        Ok(())
    }

    /// Apply, in order, whatever of `queue` no longer waits.
    fn release(
        &mut self,
        key: &(String, String),
        queue: &mut Vec<(usize, TimelineEvent)>,
    ) -> Result<(), StoreError> {
        while let Some(position) = {
            let mut found = None;
            for (position, (_, event)) in queue.iter().enumerate() {
                if !self.waits(key, event)? {
                    found = Some(position);
                    break;
                }
            }
            found
        } {
            let (_, event) = queue.remove(position);
            self.apply(key, &event)?;
        }
        Ok(())
    }
}

/// Decide a whole batch, reading through the store once per (user,
/// conversation) and carrying state forward in memory. An event that must
/// wait for an earlier one ([`waits_for_earlier`]) waits in the batch, and
/// follows as soon as the earlier one is applied; if the batch ends first,
/// its message is held ([`Outcome::Hold`]) and comes back with the next
/// batch, until it has been held for [`im_runtime::hold_limit`]: then the
/// earlier one is given up and it is applied as it is.
pub fn decide_batch(
    store: &dyn UserStore,
    conversations: Option<&dyn ConversationStore>,
    batch: &[Incoming],
) -> Result<BatchDecision, StoreError> {
    let limit = im_runtime::hold_limit().as_millis() as u64;
    let mut work = Work {
        store,
        states: HashMap::new(),
        sync_heads: HashMap::new(),
        applied_in_batch: std::collections::HashSet::new(),
        effects: Vec::new(),
        unread_before: HashMap::new(),
    };
    let mut waiting: HashMap<(String, String), Vec<(usize, TimelineEvent)>> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, message) in batch.iter().enumerate() {
        let delivery: Delivery = match im_runtime::parse_internal(message, "delivery") {
            Ok(delivery) => delivery,
            Err(rejected) => {
                outcomes.push(rejected);
                continue;
            }
        };
        let list = match delivery.payload {
            DeliveryPayload::Materialize(request) => {
                if let Some(conversations) = conversations {
                    let head = match work.sync_heads.get(&request.user_id) {
                        Some(head) => *head,
                        None => store.last_sync_seq(&request.user_id)?,
                    };
                    let head = materialize(
                        store,
                        conversations,
                        &request.user_id,
                        head,
                        &mut work.states,
                        &mut work.effects,
                    )?;
                    work.sync_heads.insert(request.user_id.clone(), head);
                }
                outcomes.push(Outcome::Done);
                continue;
            }
            payload => payload.into_data(),
        };
        let patient = message.held_ms < limit;
        for data in list {
            let conversation_id = data.event.conversation_id().to_string();
            for user in &data.users {
                let key = (user.clone(), conversation_id.clone());
                if patient && work.waits(&key, &data.event)? {
                    waiting
                        .entry(key)
                        .or_default()
                        .push((index, data.event.clone()));
                    continue;
                }
                work.apply(&key, &data.event)?;
                if let Some(queue) = waiting.get_mut(&key) {
                    work.release(&key, queue)?;
                }
            }
        }
        outcomes.push(Outcome::Done);
    }
    for (index, _) in waiting.values().flatten() {
        outcomes[*index] = Outcome::Hold;
    }
    Ok(BatchDecision {
        effects: work.effects,
        outcomes,
        unread_before: work.unread_before,
    })
}

/// What a batch decided: the effects to commit, each message's outcome, and
/// the unread count each write-diffusion row had before (see
/// [`counts_to_push`]).
#[derive(Debug)]
pub struct BatchDecision {
    pub effects: Vec<UserEffect>,
    pub outcomes: Vec<Outcome>,
    pub unread_before: HashMap<(String, String), u64>,
}

/// Pure: the (user, conversation) pairs whose devices get an `unread`
/// frame after the batch: every one a message or read mark was appended
/// for, unless its count is known unchanged (a write-diffusion row with
/// the same unread before and after, such as the sender's own message:
/// the contract pushes unread on change). In the order first appended.
pub fn counts_to_push(
    effects: &[UserEffect],
    unread_before: &HashMap<(String, String), u64>,
) -> Vec<(String, String)> {
    let mut after: HashMap<(&str, &str), u64> = HashMap::new();
    for effect in effects {
        if let UserEffect::PutUserConversation(row) = effect {
            if row.diffusion == Diffusion::Write {
                after.insert((&row.user_id, &row.conversation_id), row.unread());
            }
        }
    }
    let mut keys: Vec<(String, String)> = Vec::new();
    for effect in effects {
        let UserEffect::AppendSync(record) = effect else {
            continue;
        };
        if !matches!(record.item, SyncItem::Message(_) | SyncItem::Read(_)) {
            continue;
        }
        let key = (
            record.user_id.clone(),
            record.item.conversation_id().to_string(),
        );
        let unchanged = match (
            unread_before.get(&key),
            after.get(&(key.0.as_str(), key.1.as_str())),
        ) {
            (Some(before), Some(after)) => before == after,
            _ => false,
        };
        if !unchanged && !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The counts each of `keys` is pushed with, read after the commit: one
/// read of each user's conversation list, its sync head read first (see
/// [`UnreadCounts::as_of`]).
pub fn read_counts(
    store: &dyn UserStore,
    conversations: &dyn ConversationStore,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), UnreadCounts>, StoreError> {
    let mut counts = HashMap::new();
    let mut users: Vec<&str> = keys.iter().map(|(user, _)| user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    for user in users {
        let as_of = store.last_sync_seq(user)?;
        let summary = im_store::unread_counts(store, conversations, user)?;
        for (_, conversation_id) in keys.iter().filter(|(u, _)| u == user) {
            let unread = summary
                .items
                .iter()
                .find(|row| &row.conversation_id == conversation_id)
                .map(UserConversation::unread)
                .unwrap_or(0);
            counts.insert(
                (user.to_string(), conversation_id.clone()),
                UnreadCounts {
                    unread,
                    total: summary.total_unread,
                    as_of,
                },
            );
        }
    }
    Ok(counts)
}

/// Most messages one materialization copies per conversation; the device
/// syncs again for the rest.
pub const MATERIALIZE_LIMIT: u64 = 1000;

/// Copy the messages of `user`'s read-diffusion conversations past what its
/// log holds into the log (the user's own messages count as read). Returns
/// the new sync head.
pub(super) fn materialize(
    store: &dyn UserStore,
    conversations: &dyn ConversationStore,
    user: &str,
    mut head: u64,
    states: &mut HashMap<(String, String), UserState>,
    effects: &mut Vec<UserEffect>,
) -> Result<u64, StoreError> {
    for stored in store.user_conversations(user)? {
        let key = (user.to_string(), stored.conversation_id.clone());
        let mut row = match states.get(&key) {
            Some(state) => match &state.row {
                Some(row) => row.clone(),
                None => continue,
            },
            None => stored,
        };
        if row.diffusion != Diffusion::Read {
            continue;
        }
        let Some(conversation) = conversations.conversation(&row.conversation_id)? else {
            continue;
        };
        let until = conversation.last_seq.min(row.last_seq + MATERIALIZE_LIMIT);
        let before = row.last_seq;
        while row.last_seq < until {
            let page =
                conversations.history(&row.conversation_id, Some(row.last_seq + 101), 100)?;
            let fresh: Vec<_> = page
                .into_iter()
                .filter(|m| m.seq > row.last_seq && m.seq <= until)
                .collect();
            if fresh.is_empty() {
                break;
            }
            for message in fresh {
                head += 1;
                let item = message.sync_item(Diffusion::Read);
                effects.push(UserEffect::AppendSync(SyncRecord {
                    user_id: user.to_string(),
                    sync_seq: head,
                    event_key: format!("m:{}:{}", message.conversation_id, message.seq),
                    item,
                }));
                if message.sender_id == user {
                    row.read_seq = row.read_seq.max(message.seq);
                }
                row.last_seq = message.seq;
            }
        }
        if row.last_seq != before {
            effects.push(UserEffect::PutUserConversation(row.clone()));
        }
        states.insert(
            key,
            UserState {
                row: Some(row),
                last_sync_seq: head,
                applied: false,
            },
        );
    }
    Ok(head)
}

/// Pure: the compactions a batch's effects call for. A user's sync log
/// keeps its last `keep` items; each time its head reaches a multiple of
/// `every` past that, what is older goes (so compaction runs once every
/// `every` appends, not on each). Returns (user, compact through).
pub fn compactions(effects: &[UserEffect], keep: u64, every: u64) -> Vec<(String, u64)> {
    let every = every.max(1);
    effects
        .iter()
        .filter_map(|effect| match effect {
            UserEffect::AppendSync(record)
                if record.sync_seq > keep && record.sync_seq % every == 0 =>
            {
                Some((record.user_id.clone(), record.sync_seq - keep))
            }
            _ => None,
        })
        .collect()
}

/// How many sync items a user's log keeps (`IM_KEEP_SYNC_ITEMS`); a device
/// whose cursor falls further behind resyncs from history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncRetention {
    pub keep: u64,
    pub every: u64,
}

impl SyncRetention {
    pub fn keeping(keep: u64) -> Self {
        SyncRetention {
            keep,
            every: (keep / 10).max(1),
        }
    }
}

impl Default for SyncRetention {
    fn default() -> Self {
        Self::keeping(10_000)
    }
}

/// Notices for the push function: every sync item the batch appended, in
/// order, in messages of at most `NOTICES_PER_MESSAGE`.
pub const NOTICES_PER_MESSAGE: usize = 100;

///
/// With `counts` (what [`read_counts`] read after the commit), every
/// notice is marked counted, and the last message or read notice of each
/// counted (user, conversation) carries its counts; without (they could
/// not be read), push reads them itself.
pub fn push_notices(
    effects: &[UserEffect],
    traces: &HashMap<(String, u64), im_events::Trace>,
    counts: Option<&HashMap<(String, String), UnreadCounts>>,
) -> Vec<Vec<PushNotice>> {
    let mut notices: Vec<PushNotice> = effects
        .iter()
        .filter_map(|effect| match effect {
            UserEffect::AppendSync(record) => Some(PushNotice {
                user_id: record.user_id.clone(),
                sync_seq: Some(record.sync_seq),
                trace: record.item.seq().and_then(|seq| {
                    traces
                        .get(&(record.item.conversation_id().to_string(), seq))
                        .cloned()
                }),
                item: record.item.clone(),
                counted: counts.is_some(),
                unread: None,
            }),
            _ => None,
        })
        .collect();
    if let Some(counts) = counts {
        let mut placed = std::collections::HashSet::new();
        for notice in notices.iter_mut().rev() {
            if !matches!(notice.item, SyncItem::Message(_) | SyncItem::Read(_)) {
                continue;
            }
            let key = (
                notice.user_id.clone(),
                notice.item.conversation_id().to_string(),
            );
            if let Some(found) = counts.get(&key) {
                if placed.insert(key) {
                    notice.unread = Some(*found);
                }
            }
        }
    }
    notices
        .chunks(NOTICES_PER_MESSAGE)
        .map(<[PushNotice]>::to_vec)
        .collect()
}
