//! `fanout`: turns each committed conversation event into per-recipient
//! deliveries on `im.delivery.<user partition>.<kind>`.
//!
//! Recipients are grouped by user partition, so one delivery carries every
//! recipient of that partition: a 1:1 message costs at most two stream
//! writes, a 50-member group at most one per user partition. Groups in read
//! diffusion (above the large-group threshold) get no per-member copies: only
//! the sender's own (so their read mark moves) and the mentioned members'
//! (for offline notifications), and members pull the conversation timeline.

use std::collections::BTreeMap;
use std::sync::Arc;

use im_events::partition::partition_of;
use im_events::subjects::delivery_subject;
use im_events::{
    Delivery, DeliveryData, DeliveryPayload, Diffusion, Envelope, Timeline, TimelineBatch,
    TimelineEvent, PIPELINE_SOURCE,
};
use im_runtime::publish::{publish_all, Outgoing};
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome};
use im_store::ConversationStore;

pub const FUNCTION: &str = "fanout";

/// Membership the decision needs, loaded by the shell.
pub trait Members {
    /// Who receives the message with this seq.
    fn members_at(
        &self,
        conversation_id: &str,
        seq: u64,
    ) -> Result<Vec<String>, im_store::StoreError>;
}

/// The conversation store as the source of membership.
pub struct StoreMembers<'a>(pub &'a dyn ConversationStore);

impl Members for StoreMembers<'_> {
    fn members_at(
        &self,
        conversation_id: &str,
        seq: u64,
    ) -> Result<Vec<String>, im_store::StoreError> {
        self.0.members_at(conversation_id, seq)
    }
}

/// Who gets a timeline event.
pub fn recipients(
    event: &TimelineEvent,
    members: &dyn Members,
) -> Result<Vec<String>, im_store::StoreError> {
    let mut users = match event {
        TimelineEvent::Committed(message) => match message.diffusion {
            Diffusion::Write => members.members_at(&message.conversation_id, message.seq)?,
            // Read diffusion: the sender (so their read mark moves), and
            // members the message mentions (so `offline` can notify them;
            // unread takes no copy for them). Membership as of the seq, so
            // replay reaches the same people.
            Diffusion::Read if message.mentions.is_empty() => vec![message.sender_id.clone()],
            Diffusion::Read => {
                let mut users: Vec<String> = members
                    .members_at(&message.conversation_id, message.seq)?
                    .into_iter()
                    .filter(|member| message.mentions.contains(member))
                    .collect();
                users.push(message.sender_id.clone());
                users
            }
        },
        // dedupe named the recipients at the event's position, so replay
        // reaches the same people whatever membership is now.
        TimelineEvent::Edited(edit) => edit.recipients.clone(),
        TimelineEvent::Recalled(recall) => recall.recipients.clone(),
        TimelineEvent::Read(read) => vec![read.user_id.clone()],
        TimelineEvent::Muted(mute) => vec![mute.user_id.clone()],
        TimelineEvent::Reacted(reaction) => reaction.recipients.clone(),
        // Dedupe keeps blocks and receipts itself (receipts are pushed from
        // its commit): no user's list or log changes.
        TimelineEvent::Blocked(_) | TimelineEvent::Delivered(_) => vec![],
        TimelineEvent::Changed(change) => {
            if change.mode_changed {
                change
                    .members
                    .iter()
                    .chain(&change.removed)
                    .cloned()
                    .collect()
            } else {
                change
                    .added
                    .iter()
                    .chain(&change.removed)
                    .cloned()
                    .collect()
            }
        }
    };
    users.sort();
    users.dedup();
    Ok(users)
}

fn delivery_kind(event: &TimelineEvent) -> &'static str {
    match event {
        TimelineEvent::Committed(_) => "message",
        TimelineEvent::Edited(_) => "edit",
        TimelineEvent::Recalled(_) => "recall",
        TimelineEvent::Read(_) => "read",
        TimelineEvent::Muted(_) => "mute",
        TimelineEvent::Reacted(_) => "reaction",
        TimelineEvent::Blocked(_) => "block",
        TimelineEvent::Delivered(_) => "delivered",
        TimelineEvent::Changed(_) => "membership",
    }
}

/// Pure: one delivery per user partition that has recipients.
pub fn deliveries(
    event: &TimelineEvent,
    recipients: Vec<String>,
    user_partitions: u32,
    time: &str,
) -> Vec<(String, String, Delivery)> {
    let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for user in recipients {
        by_partition
            .entry(partition_of(&user, user_partitions))
            .or_default()
            .push(user);
    }
    let key = event.effect_key();
    by_partition
        .into_iter()
        .map(|(partition, users)| {
            let id = format!("dl:{key}:{partition}");
            let envelope = Envelope::new(
                PIPELINE_SOURCE,
                id.clone(),
                time.to_string(),
                DeliveryPayload::Delivery(DeliveryData {
                    users,
                    event: event.clone(),
                    trace: None,
                }),
            );
            (
                delivery_subject(partition, delivery_kind(event)),
                id,
                envelope,
            )
        })
        .collect()
}

/// Pure: a batch's deliveries, one stream message per user partition that
/// has recipients, carrying that partition's events in order: a batch of
/// 1:1 messages costs at most one write per user partition, not two per
/// message. The message id is derived from the events it carries, so a
/// redelivered batch is dropped as a duplicate (and if it is regrouped
/// differently, unread and offline still apply each event once).
pub fn batch_deliveries(
    events: &[(TimelineEvent, Vec<String>, Option<im_events::Trace>)],
    user_partitions: u32,
    time: &str,
) -> Vec<(String, String, Delivery)> {
    let mut by_partition: BTreeMap<u32, Vec<DeliveryData>> = BTreeMap::new();
    for (event, recipients, trace) in events {
        let mut users_by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for user in recipients {
            users_by_partition
                .entry(partition_of(user, user_partitions))
                .or_default()
                .push(user.clone());
        }
        for (partition, users) in users_by_partition {
            by_partition
                .entry(partition)
                .or_default()
                .push(DeliveryData {
                    users,
                    event: event.clone(),
                    trace: trace.clone(),
                });
        }
    }
    by_partition
        .into_iter()
        .map(|(partition, mut list)| {
            if list.len() == 1 {
                let data = list.remove(0);
                let key = data.event.effect_key();
                let kind = delivery_kind(&data.event);
                let id = format!("dl:{key}:{partition}");
                let envelope = Envelope::new(
                    PIPELINE_SOURCE,
                    id.clone(),
                    time.to_string(),
                    DeliveryPayload::Delivery(data),
                );
                return (delivery_subject(partition, kind), id, envelope);
            }
            let keys: Vec<String> = list.iter().map(|d| d.event.effect_key()).collect();
            let id = format!(
                "dlb:{partition}:{}:{:016x}",
                list.len(),
                im_events::partition::fnv1a64(keys.join("\n").as_bytes())
            );
            let envelope = Envelope::new(
                PIPELINE_SOURCE,
                id.clone(),
                time.to_string(),
                DeliveryPayload::Deliveries(list),
            );
            (delivery_subject(partition, "batch"), id, envelope)
        })
        .collect()
}

pub struct Fanout {
    pub js: async_nats::jetstream::Context,
    pub store: Arc<dyn ConversationStore>,
    pub user_partitions: u32,
}

impl BatchHandler for Fanout {
    async fn handle(
        &self,
        claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let store = self.store.clone();
        let partitions = self.user_partitions;
        let partition = claim.partition;
        let (outgoing, outcomes, group_pushes, spans) = im_runtime::blocking(move || {
            // Until the batch is published.
            let mut spans = im_runtime::trace::Spans::default();
            let mut events: Vec<(TimelineEvent, Vec<String>, Option<im_events::Trace>)> =
                Vec::new();
            let mut time = String::new();
            let mut group_pushes: Vec<serde_json::Value> = Vec::new();
            let mut outcomes = Vec::with_capacity(batch.len());
            for message in &batch {
                let carried = if im_events::subjects::is_batch_subject(&message.subject) {
                    im_runtime::parse_internal::<TimelineBatch>(message, "timeline batch")
                        .map(|batch| batch.events)
                } else {
                    im_runtime::parse_internal::<Timeline>(message, "timeline event")
                        .map(|timeline| vec![timeline])
                };
                let timelines = match carried {
                    Ok(timelines) => timelines,
                    Err(rejected) => {
                        outcomes.push(rejected);
                        continue;
                    }
                };
                for timeline in timelines {
                    if let TimelineEvent::Committed(message) = &timeline.payload {
                        if message.diffusion == Diffusion::Read {
                            group_pushes.push(serde_json::to_value(message).unwrap_or_default());
                        }
                    }
                    let users = recipients(&timeline.payload, &StoreMembers(store.as_ref()))?;
                    time = timeline.time.clone();
                    let seq = match &timeline.payload {
                        TimelineEvent::Committed(message) => Some(message.seq),
                        _ => None,
                    };
                    let trace = spans.event(
                        FUNCTION,
                        timeline.trace().as_ref(),
                        Some(partition),
                        seq,
                        batch.len(),
                    );
                    events.push((timeline.payload, users, trace));
                }
                outcomes.push(Outcome::Done);
            }
            let mut outgoing = Vec::new();
            for (subject, id, delivery) in batch_deliveries(&events, partitions, &time) {
                let payload = serde_json::to_vec(&delivery)
                    .map_err(|e| im_store::StoreError::Backend(e.to_string()))?;
                outgoing.push(Outgoing {
                    subject,
                    message_id: Some(id),
                    headers: None,
                    payload: payload.into(),
                });
            }
            Ok::<_, im_store::StoreError>((outgoing, outcomes, group_pushes, spans))
        })
        .await?;
        publish_all(&self.js, outgoing)
            .await
            .map_err(HandlerError::Transient)?;
        // Large groups get no per-member deliveries: tell push, which
        // notifies the members who are online (members who are not pull).
        let client = self.js.client();
        for message in group_pushes {
            let _ = client
                .publish(
                    im_events::subjects::GROUP_PUSH_SUBJECT,
                    message.to_string().into(),
                )
                .await;
        }
        drop(spans);
        Ok(outcomes)
    }
}

pub async fn run(
    client: async_nats::Client,
    store: Arc<dyn ConversationStore>,
    instance: String,
    lease_ttl: std::time::Duration,
    shutdown: im_runtime::Shutdown,
) -> anyhow::Result<()> {
    let handler = Arc::new(Fanout {
        js: async_nats::jetstream::new(client.clone()),
        store,
        user_partitions: im_runtime::topology::topology().partitions.user,
    });
    im_runtime::run_function(client, FUNCTION, instance, lease_ttl, handler, shutdown).await
}

#[cfg(test)]
mod tests;
