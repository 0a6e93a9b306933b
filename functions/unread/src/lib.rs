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

use im_events::{Delivery, DeliveryPayload, Diffusion, TimelineEvent};
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome};
use im_store::{
    ConversationStore, StoreError, SyncRecord, UserConversation, UserEffect, UserStore,
};
use serde_json::{json, Value};

pub const FUNCTION: &str = "unread";

/// What deciding for one user reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserState {
    pub row: Option<UserConversation>,
    pub last_sync_seq: u64,
    pub applied: bool,
}

/// Pure: one timeline event for one user → effects, and the user's new state.
pub fn decide(
    user_id: &str,
    event: &TimelineEvent,
    state: &UserState,
) -> (Vec<UserEffect>, UserState) {
    let mut next = state.clone();
    let mut effects = Vec::new();
    if state.applied {
        return (effects, next);
    }
    let conversation_id = event.conversation_id().to_string();
    let fresh_row = |at_seq: u64, diffusion: Diffusion| UserConversation {
        user_id: user_id.to_string(),
        conversation_id: conversation_id.clone(),
        last_seq: at_seq,
        read_seq: at_seq,
        joined_seq: at_seq,
        diffusion,
        muted_until_ms: None,
        last_message: None,
    };
    let mut append = |next: &mut UserState, key: String, item: Value| {
        next.last_sync_seq += 1;
        effects.push(UserEffect::AppendSync(SyncRecord {
            user_id: user_id.to_string(),
            sync_seq: next.last_sync_seq,
            event_key: key,
            item,
        }));
    };
    match event {
        TimelineEvent::Committed(message) if message.diffusion == Diffusion::Read => {
            // Read diffusion: only the sender gets this, so that their own
            // message counts as read; messages enter sync logs when a device
            // syncs (materialize), and last_seq tracks what was copied.
            let Some(mut row) = state.row.clone() else {
                return (vec![], next);
            };
            if message.sender_id != user_id || message.seq <= row.read_seq {
                return (vec![], next);
            }
            row.read_seq = message.seq;
            row.diffusion = Diffusion::Read;
            effects.push(UserEffect::PutUserConversation(row.clone()));
            next.row = Some(row);
        }
        TimelineEvent::Committed(message) => {
            let mut row = state
                .row
                .clone()
                .unwrap_or_else(|| fresh_row(0, message.diffusion));
            if message.seq <= row.last_seq {
                return (vec![], next);
            }
            row.last_seq = message.seq;
            row.diffusion = message.diffusion;
            if message.sender_id == user_id {
                row.read_seq = message.seq;
            }
            row.last_message = Some(json!({
                "seq": message.seq, "sender_id": message.sender_id, "kind": message.kind,
                "body": message.body, "sent_at": message.sent_at,
            }));
            let mut item = serde_json::to_value(message).unwrap_or_default();
            item["type"] = json!("message");
            append(&mut next, event.effect_key(), item);
            effects.push(UserEffect::PutUserConversation(row.clone()));
            next.row = Some(row);
        }
        TimelineEvent::Read(read) => {
            let Some(mut row) = state.row.clone() else {
                return (vec![], next);
            };
            let ceiling = match row.diffusion {
                Diffusion::Write => row.last_seq,
                // dedupe checked the mark against the conversation's seq.
                Diffusion::Read => read.seq,
            };
            let mark = read.seq.min(ceiling);
            if mark <= row.read_seq {
                return (vec![], next);
            }
            row.read_seq = mark;
            append(
                &mut next,
                event.effect_key(),
                json!({"type": "read", "conversation_id": conversation_id, "seq": mark}),
            );
            effects.push(UserEffect::PutUserConversation(row.clone()));
            next.row = Some(row);
        }
        TimelineEvent::Edited(edit) => {
            let mut item = serde_json::to_value(edit).unwrap_or_default();
            item["type"] = json!("edit");
            append(&mut next, event.effect_key(), item);
            effects.push(UserEffect::MarkApplied {
                user_id: user_id.to_string(),
                key: event.effect_key(),
            });
            next.applied = true;
        }
        TimelineEvent::Reacted(reaction) => {
            let mut item = serde_json::to_value(reaction).unwrap_or_default();
            item["type"] = json!("reaction");
            append(&mut next, event.effect_key(), item);
            effects.push(UserEffect::MarkApplied {
                user_id: user_id.to_string(),
                key: event.effect_key(),
            });
            next.applied = true;
        }
        TimelineEvent::Blocked(_) | TimelineEvent::Delivered(_) => {}
        TimelineEvent::Recalled(recall) => {
            let mut item = serde_json::to_value(recall).unwrap_or_default();
            item["type"] = json!("recall");
            append(&mut next, event.effect_key(), item);
            effects.push(UserEffect::MarkApplied {
                user_id: user_id.to_string(),
                key: event.effect_key(),
            });
            next.applied = true;
        }
        TimelineEvent::Muted(mute) => {
            let Some(mut row) = state.row.clone() else {
                return (vec![], next);
            };
            if row.muted_until_ms == mute.until_ms {
                return (vec![], next);
            }
            row.muted_until_ms = mute.until_ms;
            effects.push(UserEffect::PutUserConversation(row.clone()));
            next.row = Some(row);
        }
        TimelineEvent::Changed(change) => {
            if change.removed.iter().any(|u| u == user_id) {
                if state.row.is_some() {
                    effects.push(UserEffect::DeleteUserConversation {
                        user_id: user_id.to_string(),
                        conversation_id,
                    });
                    next.row = None;
                }
            } else if change.added.iter().any(|u| u == user_id) {
                if state.row.is_none() {
                    let row = fresh_row(change.at_seq, change.diffusion);
                    effects.push(UserEffect::PutUserConversation(row.clone()));
                    next.row = Some(row);
                }
            } else if let Some(mut row) = state.row.clone() {
                if row.diffusion != change.diffusion {
                    // Leaving read diffusion: take over the conversation's
                    // seq as of the change, so counting goes on from there.
                    row.last_seq = row.last_seq.max(change.at_seq);
                    row.diffusion = change.diffusion;
                    effects.push(UserEffect::PutUserConversation(row.clone()));
                    next.row = Some(row);
                }
            }
        }
    }
    (effects, next)
}

fn needs_applied_check(event: &TimelineEvent) -> bool {
    matches!(
        event,
        TimelineEvent::Edited(_) | TimelineEvent::Recalled(_) | TimelineEvent::Reacted(_)
    )
}

/// Whether `event` must wait, for the user whose row this is, for an
/// earlier event of its conversation that has not arrived: a write-diffusion
/// message past the next seq (every member gets every seq after joining), or
/// a read mark past the last message. JetStream hands a conversation's
/// events over in order except across failures (a delivery lost on its way
/// comes back after `ack_wait`; a publish retried across a leader change
/// lands behind later ones): applying the later one first would put it
/// before the earlier in the sync log, and make the earlier look like a
/// duplicate. Pure.
pub fn waits_for_earlier(event: &TimelineEvent, row: Option<&UserConversation>) -> bool {
    match event {
        TimelineEvent::Committed(message) if message.diffusion == Diffusion::Write => {
            message.seq > row.map_or(0, |row| row.last_seq) + 1
        }
        TimelineEvent::Read(read) => {
            row.is_none_or(|row| row.diffusion == Diffusion::Write && read.seq > row.last_seq)
        }
        _ => false,
    }
}

/// A batch's state: rows and sync heads read once and carried forward.
struct Work<'a> {
    store: &'a dyn UserStore,
    states: HashMap<(String, String), UserState>,
    sync_heads: HashMap<String, u64>,
    applied_in_batch: std::collections::HashSet<(String, String)>,
    effects: Vec<UserEffect>,
}

impl Work<'_> {
    fn state(&mut self, key: &(String, String)) -> Result<&mut UserState, StoreError> {
        if !self.states.contains_key(key) {
            let row = self.store.user_conversation(&key.0, &key.1)?;
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
) -> Result<(Vec<UserEffect>, Vec<Outcome>), StoreError> {
    let limit = im_runtime::hold_limit().as_millis() as u64;
    let mut work = Work {
        store,
        states: HashMap::new(),
        sync_heads: HashMap::new(),
        applied_in_batch: std::collections::HashSet::new(),
        effects: Vec::new(),
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
    Ok((work.effects, outcomes))
}

/// Most messages one materialization copies per conversation; the device
/// syncs again for the rest.
pub const MATERIALIZE_LIMIT: u64 = 1000;

/// Copy the messages of `user`'s read-diffusion conversations past what its
/// log holds into the log (the user's own messages count as read). Returns
/// the new sync head.
fn materialize(
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
                let mut item = serde_json::to_value(&message).unwrap_or_default();
                item["type"] = json!("message");
                item["diffusion"] = json!("read");
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

/// Notices for the push function: every sync item the batch appended, in
/// order, in messages of at most `NOTICES_PER_MESSAGE`.
pub const NOTICES_PER_MESSAGE: usize = 100;

pub fn push_notices(
    effects: &[UserEffect],
    traces: &HashMap<(String, u64), im_events::Trace>,
) -> Vec<Vec<Value>> {
    let notices: Vec<Value> = effects
        .iter()
        .filter_map(|effect| match effect {
            UserEffect::AppendSync(record) => {
                let mut notice = json!({"user_id": record.user_id, "sync_seq": record.sync_seq, "item": record.item});
                let key = (
                    record.item["conversation_id"].as_str(),
                    record.item["seq"].as_u64(),
                );
                if let (Some(conversation), Some(seq)) = key {
                    if let Some(trace) = traces.get(&(conversation.to_string(), seq)) {
                        notice["trace"] = json!(trace);
                    }
                }
                Some(notice)
            }
            _ => None,
        })
        .collect();
    notices
        .chunks(NOTICES_PER_MESSAGE)
        .map(<[Value]>::to_vec)
        .collect()
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
                let applied =
                    serde_json::to_value(im_events::Verdict::applied()).unwrap_or_default();
                im_runtime::publish::reply(client, subject, &applied).await;
            }
            let subject = im_events::subjects::push_subject(claim.partition);
            for chunk in notices {
                let _ = client
                    .publish(subject.clone(), Value::Array(chunk).to_string().into())
                    .await;
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
                item: json!({}),
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
