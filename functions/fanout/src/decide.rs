//! The pure core of `fanout`: who receives a timeline event, and the
//! deliveries it makes.

use super::*;

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
    /// A `dm:<a>:<b>` conversation's members are its id's two users, at
    /// every seq (no one joins or leaves one): no store read, which was a
    /// read transaction of its own per message (its file locks and
    /// re-read pages were most of fanout's cost at 1,000 msg/s).
    fn members_at(
        &self,
        conversation_id: &str,
        seq: u64,
    ) -> Result<Vec<String>, im_store::StoreError> {
        if let Some((a, b)) = im_events::ids::direct_members(conversation_id) {
            return Ok(vec![a.to_string(), b.to_string()]);
        }
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

pub(super) fn delivery_kind(event: &TimelineEvent) -> &'static str {
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
