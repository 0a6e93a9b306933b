//! The pure core of `unread`: one timeline event for one user → effects.

use super::*;

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
    let mut append = |next: &mut UserState, key: String, item: SyncItem| {
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
            row.last_message = Some(message.into());
            append(&mut next, event.effect_key(), message.clone().into());
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
                SyncItem::Read(ReadItem {
                    conversation_id: conversation_id.clone(),
                    seq: mark,
                }),
            );
            effects.push(UserEffect::PutUserConversation(row.clone()));
            next.row = Some(row);
        }
        TimelineEvent::Edited(edit) => {
            append(&mut next, event.effect_key(), SyncItem::Edit(edit.clone()));
            effects.push(UserEffect::MarkApplied {
                user_id: user_id.to_string(),
                key: event.effect_key(),
            });
            next.applied = true;
        }
        TimelineEvent::Reacted(reaction) => {
            append(
                &mut next,
                event.effect_key(),
                SyncItem::Reaction(reaction.clone()),
            );
            effects.push(UserEffect::MarkApplied {
                user_id: user_id.to_string(),
                key: event.effect_key(),
            });
            next.applied = true;
        }
        TimelineEvent::Blocked(_) | TimelineEvent::Delivered(_) => {}
        TimelineEvent::Recalled(recall) => {
            append(
                &mut next,
                event.effect_key(),
                SyncItem::Recall(recall.clone()),
            );
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

pub(super) fn needs_applied_check(event: &TimelineEvent) -> bool {
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
