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

use im_events::{Delivery, DeliveryPayload, Diffusion, ErrorCode, EventError, TimelineEvent};
use im_runtime::consumer::Identity;
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome};
use im_store::{StoreError, SyncRecord, UserConversation, UserEffect, UserStore};
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
    matches!(event, TimelineEvent::Edited(_) | TimelineEvent::Recalled(_))
}

/// Decide a whole batch, reading through the store once per (user,
/// conversation) and carrying state forward in memory.
pub fn decide_batch(
    store: &dyn UserStore,
    batch: &[Incoming],
) -> Result<(Vec<UserEffect>, Vec<Outcome>), StoreError> {
    let mut states: HashMap<(String, String), UserState> = HashMap::new();
    let mut sync_heads: HashMap<String, u64> = HashMap::new();
    let mut applied_in_batch: std::collections::HashSet<(String, String)> =
        std::collections::HashSet::new();
    let mut effects = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for message in batch {
        let delivery: Delivery = match serde_json::from_slice(&message.payload) {
            Ok(delivery) => delivery,
            Err(error) => {
                outcomes.push(Outcome::Reject {
                    error: EventError::new(
                        ErrorCode::NotCloudevent,
                        format!("delivery does not parse: {error}"),
                    ),
                    identity: Identity::default(),
                });
                continue;
            }
        };
        let DeliveryPayload::Delivery(data) = delivery.payload;
        let conversation_id = data.event.conversation_id().to_string();
        for user in &data.users {
            let key = (user.clone(), conversation_id.clone());
            let mut state = match states.remove(&key) {
                Some(state) => state,
                None => UserState {
                    row: store.user_conversation(user, &conversation_id)?,
                    last_sync_seq: 0,
                    applied: false,
                },
            };
            state.last_sync_seq = match sync_heads.get(user) {
                Some(head) => *head,
                None => store.last_sync_seq(user)?,
            };
            if needs_applied_check(&data.event) {
                let effect_key = (user.clone(), data.event.effect_key());
                state.applied = applied_in_batch.contains(&effect_key)
                    || store.effect_applied(user, &effect_key.1)?;
                applied_in_batch.insert(effect_key);
            }
            let (decided, mut next) = decide(user, &data.event, &state);
            sync_heads.insert(user.clone(), next.last_sync_seq);
            next.applied = false;
            states.insert(key, next);
            effects.extend(decided);
        }
        outcomes.push(Outcome::Done);
    }
    Ok((effects, outcomes))
}

pub struct Unread {
    pub store: Arc<dyn UserStore>,
}

impl BatchHandler for Unread {
    async fn handle(
        &self,
        claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let store = self.store.clone();
        let fence = claim.fence();
        let outcomes = tokio::task::spawn_blocking(move || {
            let (effects, outcomes) = decide_batch(store.as_ref(), &batch)?;
            if !effects.is_empty() {
                store.apply(&fence, &effects)?;
            }
            Ok::<_, StoreError>(outcomes)
        })
        .await
        .map_err(|error| HandlerError::Transient(error.to_string()))??;
        Ok(outcomes)
    }
}

pub async fn run(
    client: async_nats::Client,
    store: Arc<dyn UserStore>,
    instance: String,
    lease_ttl: std::time::Duration,
    shutdown: im_runtime::Shutdown,
) -> anyhow::Result<()> {
    let handler = Arc::new(Unread { store });
    im_runtime::run_function(client, FUNCTION, instance, lease_ttl, handler, shutdown).await
}
