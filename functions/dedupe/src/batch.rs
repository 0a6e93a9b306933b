//! A batch of accepted events for one conversation partition: loading the
//! state it needs (prefetch), deciding in order over an overlay, and what a
//! committed batch publishes (timeline envelopes, fast push notices).

use super::*;

/// Load into `view` everything deciding `event` may read.
pub(super) fn prefetch(
    store: &dyn ConversationStore,
    view: &mut MemoryView,
    event: &Accepted,
) -> Result<(), im_store::StoreError> {
    let key = (event.source.clone(), event.id.clone());
    if let std::collections::hash_map::Entry::Vacant(slot) = view.idempotency.entry(key) {
        slot.insert(store.idempotency(&event.source, &event.id)?);
    }
    let conversation_id = event.payload.conversation_id().to_string();
    if !view.conversations.contains_key(&conversation_id) {
        let found = store.conversation(&conversation_id)?;
        view.conversations.insert(conversation_id.clone(), found);
    }
    let users: Vec<String> = referenced_users(&event.payload)
        .into_iter()
        .filter(|user| {
            !view
                .roles
                .contains_key(&(conversation_id.clone(), user.clone()))
        })
        .collect();
    if !users.is_empty() {
        let found = store.memberships(&conversation_id, &users)?;
        for user in users {
            let member = found.iter().find(|m| m.user_id == user);
            if let Some(member) = member {
                view.joined
                    .insert((conversation_id.clone(), user.clone()), member.joined_seq);
            }
            view.roles
                .insert((conversation_id.clone(), user), member.map(|m| m.role));
        }
    }
    let record = view.conversations.get(&conversation_id).cloned().flatten();
    let write_diffusion = record
        .as_ref()
        .is_some_and(|record| record.diffusion == im_events::Diffusion::Write);
    let members_needed = match &event.payload {
        // Receipts and reactions name recipients only in write diffusion:
        // a large group's members are never loaded for them.
        Command::Read(_) | Command::Delivered(_) | Command::React(_) => write_diffusion,
        // A direct conversation under an id of its own: its two members
        // say whose block applies.
        Command::Send(_) => record.as_ref().is_some_and(|record| {
            record.kind == im_events::ConversationKind::Direct
                && im_events::ids::direct_members(&conversation_id).is_none()
        }),
        command => crate::decide::needs_members(command),
    };
    if members_needed && !view.members.contains_key(&conversation_id) {
        let stored = store.current_members(&conversation_id)?;
        view.load_members(&conversation_id, stored);
    }
    let actor = event.payload.actor().unwrap_or_default().to_string();
    let peer = crate::decide::direct_peer(
        &conversation_id,
        record.as_ref(),
        &actor,
        &view.members(&conversation_id),
    );
    if let Some(pair) = crate::decide::block_pair(&event.payload, peer.as_deref()) {
        if let std::collections::hash_map::Entry::Vacant(slot) = view.blocks.entry(pair) {
            let (user, other) = slot.key().clone();
            slot.insert(store.blocked(&user, &other)?);
        }
    }
    match &event.payload {
        Command::Read(im_events::ReadData { user_id, .. })
        | Command::Delivered(im_events::DeliveredData { user_id, .. }) => {
            let key = (conversation_id.clone(), user_id.clone());
            if let std::collections::hash_map::Entry::Vacant(slot) = view.receipts.entry(key) {
                let marks = store
                    .receipt(&conversation_id, user_id)?
                    .map(|r| (r.read_seq, r.delivered_seq))
                    .unwrap_or_default();
                slot.insert(marks);
            }
        }
        Command::React(react) => {
            let key = (
                conversation_id.clone(),
                react.seq,
                react.emoji.clone(),
                react.user_id.clone(),
            );
            if let std::collections::hash_map::Entry::Vacant(slot) = view.reactions.entry(key) {
                let present = store
                    .reactions(&conversation_id, react.seq, react.seq)?
                    .iter()
                    .any(|r| r.emoji == react.emoji && r.user_id == react.user_id);
                slot.insert(present);
            }
        }
        _ => {}
    }
    let mut seqs = Vec::new();
    match &event.payload {
        Command::Edit(edit) => seqs.push(edit.seq),
        Command::Recall(recall) => seqs.push(recall.seq),
        Command::React(react) => seqs.push(react.seq),
        _ => {}
    }
    if let Some(Some(record)) = view
        .idempotency
        .get(&(event.source.clone(), event.id.clone()))
    {
        seqs.extend(record.seq);
    }
    for seq in seqs {
        if let std::collections::hash_map::Entry::Vacant(slot) =
            view.messages.entry((conversation_id.clone(), seq))
        {
            slot.insert(store.message(&conversation_id, seq)?);
        }
    }
    Ok(())
}

pub(super) fn identity(event: &Accepted) -> Identity {
    Identity {
        source: Some(event.source.clone()),
        event_id: Some(event.id.clone()),
        event_type: Some(event.payload.type_name().to_string()),
        stage: None,
    }
}

/// The events one stream message carries: an inbound event as it was
/// published (from `IM_INGEST`, admitted here: its reply subject in the
/// `Im-Reply-To` header), or, from `IM_ACCEPTED` as earlier releases'
/// ingest wrote it, one accepted event or an envelope of several.
pub(super) enum Carried {
    One(Box<AcceptedItem>),
    Several(Vec<AcceptedItem>),
    /// An inbound event admission refused: dead-lettered as ingest's
    /// refusal, its waiting publisher told why.
    Refused {
        error: im_events::EventError,
        identity: Identity,
        reply_to: Option<String>,
    },
}

/// Whether a message is from the `IM_ACCEPTED` stream of earlier releases.
pub fn is_accepted_subject(subject: &str) -> bool {
    subject.starts_with("im.accepted.")
}

pub(super) fn carried(message: &Incoming, rules: &Rules) -> Result<Carried, Outcome> {
    let reply_to = reply_subject(&message.headers).map(str::to_string);
    if !is_accepted_subject(&message.subject) {
        let inbound = InboundMessage {
            subject: &message.subject,
            headers: &message.headers,
            payload: &message.payload,
        };
        return Ok(match admit(&inbound, message.published_ms, rules) {
            Ok(event) => Carried::One(Box::new(AcceptedItem { event, reply_to })),
            Err(error) => Carried::Refused {
                error,
                identity: Identity {
                    stage: Some(im_events::admission::STAGE),
                    ..im_events::admission::identity_of(&inbound).into()
                },
                reply_to,
            },
        });
    }
    if im_events::subjects::is_batch_subject(&message.subject) {
        let batch: AcceptedBatch = im_runtime::parse_internal(message, "accepted batch")?;
        return Ok(Carried::Several(batch.events));
    }
    let event: Accepted = im_runtime::parse_internal(message, "accepted event")?;
    Ok(Carried::One(Box::new(AcceptedItem { event, reply_to })))
}

/// The decisions of a whole batch.
pub struct BatchDecision {
    /// Applied in one transaction.
    pub effects: Vec<ConversationEffect>,
    /// Published after the transaction commits, each with the time it is
    /// stamped with (when its event was received: stable under replay)
    /// and the trace of the event that caused it.
    pub outputs: Vec<(TimelineEvent, Stamp)>,
    /// One per message, in order.
    pub outcomes: Vec<Outcome>,
    /// What each waiting publisher is told once the batch is durable (the
    /// committed message for a send, or the refusal): (reply subject, verdict).
    pub answers: Vec<(String, Verdict)>,
}

/// What a timeline event is stamped with from the event that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    pub time: String,
    pub trace: Option<im_events::Trace>,
}

pub fn decide_batch(
    store: &dyn ConversationStore,
    config: &Config,
    batch: &[Incoming],
) -> Result<BatchDecision, im_store::StoreError> {
    let mut view = MemoryView::default();
    let mut decision = BatchDecision {
        effects: Vec::new(),
        outputs: Vec::new(),
        outcomes: Vec::with_capacity(batch.len()),
        answers: Vec::new(),
    };
    for message in batch {
        let (items, single) = match carried(message, &config.admission) {
            Ok(Carried::One(item)) => (vec![*item], true),
            Ok(Carried::Several(items)) => (items, false),
            Ok(Carried::Refused {
                error,
                identity,
                reply_to,
            }) => {
                if let Some(reply_to) = reply_to {
                    decision.answers.push((reply_to, Verdict::refused(&error)));
                }
                decision.outcomes.push(Outcome::Reject { error, identity });
                continue;
            }
            Err(rejected) => {
                decision.outcomes.push(rejected);
                continue;
            }
        };
        let mut rejections = Vec::new();
        for item in items {
            let event = &item.event;
            prefetch(store, &mut view, event)?;
            let received = event
                .imreceived
                .clone()
                .unwrap_or_else(|| event.time.clone());
            match decide(event, &view, config) {
                Ok(decided) => {
                    let committed = decided.outputs.iter().find_map(|output| match output {
                        TimelineEvent::Committed(message) => Some(message),
                        _ => None,
                    });
                    if let Some(reply_to) = &item.reply_to {
                        let verdict = match committed {
                            Some(message) => Verdict::committed(
                                &message.message_id,
                                &message.conversation_id,
                                message.seq,
                            ),
                            None => Verdict::applied(),
                        };
                        decision.answers.push((reply_to.clone(), verdict));
                    }
                    view.absorb(&decided.effects);
                    decision.effects.extend(decided.effects);
                    let stamp = Stamp {
                        time: received,
                        trace: event.trace(),
                    };
                    decision.outputs.extend(
                        decided
                            .outputs
                            .into_iter()
                            .map(|output| (output, stamp.clone())),
                    );
                }
                Err(error) => {
                    if let Some(reply_to) = &item.reply_to {
                        decision
                            .answers
                            .push((reply_to.clone(), Verdict::refused(&error)));
                    }
                    rejections.push(Rejection {
                        identity: identity(event),
                        subject: accepted_subject(
                            im_events::subjects::partition_of_subject(&message.subject)
                                .unwrap_or_default(),
                            event.payload.type_name(),
                        ),
                        payload: serde_json::to_vec(event).unwrap_or_default().into(),
                        error,
                    });
                }
            }
        }
        decision.outcomes.push(match (single, rejections.pop()) {
            (_, None) => Outcome::Done,
            // A message of one event: dead-lettered as it is.
            (true, Some(rejection)) => Outcome::Reject {
                error: rejection.error,
                identity: rejection.identity,
            },
            (false, Some(last)) => {
                rejections.push(last);
                Outcome::Partial(rejections)
            }
        });
    }
    Ok(decision)
}

/// A timeline event as it is published: its conversation partition and
/// its CloudEvent, stamped with `time`.
pub fn timeline_event(event: TimelineEvent, stamp: Stamp, partitions: u32) -> (u32, Timeline) {
    let Stamp { time, trace } = stamp;
    let id = match &event {
        TimelineEvent::Committed(message) => message.message_id.clone(),
        _ => event.effect_key(),
    };
    let time = match &event {
        TimelineEvent::Committed(message) => message.sent_at.clone(),
        TimelineEvent::Edited(edit) => edit.edited_at.clone(),
        TimelineEvent::Recalled(recall) => recall.recalled_at.clone(),
        _ => time,
    };
    let partition = partition_of(event.conversation_id(), partitions);
    (
        partition,
        Envelope::new(PIPELINE_SOURCE, id, time, event).with_trace(trace),
    )
}

/// Pure: a batch's timeline events as one envelope per conversation
/// partition on `im.timeline.<p>.batch`, in order: one stream write per
/// partition per batch. The id is derived from the events it carries, so a
/// redelivered batch is dropped as a duplicate (regrouped, fanout and its
/// consumers still apply each event once).
pub fn timeline_envelopes(events: &[(u32, Timeline)]) -> Result<Vec<Outgoing>, serde_json::Error> {
    let mut by_partition: std::collections::BTreeMap<u32, Vec<Timeline>> =
        std::collections::BTreeMap::new();
    for (partition, event) in events {
        by_partition
            .entry(*partition)
            .or_default()
            .push(event.clone());
    }
    by_partition
        .into_iter()
        .map(|(partition, events)| {
            let keys: Vec<String> = events.iter().map(|e| e.payload.effect_key()).collect();
            let message_id = format!(
                "tlb:{partition}:{}:{:016x}",
                events.len(),
                im_events::partition::fnv1a64(keys.join("\n").as_bytes())
            );
            Ok(Outgoing {
                subject: timeline_batch_subject(partition),
                message_id: Some(message_id),
                headers: None,
                payload: serde_json::to_vec(&TimelineBatch { events })?.into(),
            })
        })
        .collect()
}

/// The push notices of the fast path: each committed write-diffusion
/// message for every member, grouped by user partition. They carry no
/// `sync_seq` (unread assigns it later and pushes again with it); the
/// device treats `message_id` as the identity, so it shows the message once.
/// A message's notice carries its trace (by message id) on to push.
pub fn fast_notices(
    committed: &[(CommittedMessage, Vec<String>)],
    receipts: &[(SyncItem, Vec<String>)],
    traces: &std::collections::HashMap<String, im_events::Trace>,
    user_partitions: u32,
) -> Vec<(u32, Vec<PushNotice>)> {
    let mut by_partition: std::collections::BTreeMap<u32, Vec<PushNotice>> =
        std::collections::BTreeMap::new();
    let messages = committed.iter().map(|(message, members)| {
        (
            SyncItem::from(message.clone()),
            members,
            traces.get(&message.message_id),
        )
    });
    let receipts = receipts
        .iter()
        .map(|(item, users)| (item.clone(), users, None));
    for (item, members, trace) in messages.chain(receipts) {
        for member in members {
            by_partition
                .entry(partition_of(member, user_partitions))
                .or_default()
                .push(PushNotice {
                    user_id: member.clone(),
                    sync_seq: None,
                    item: item.clone(),
                    trace: trace.cloned(),
                    // Unread counts it, after its commit.
                    counted: false,
                    unread: None,
                });
        }
    }
    by_partition.into_iter().collect()
}

/// The receipts a batch's outputs push to the other members' online
/// devices (pushes only: `receipts` answers what they say at any time).
pub fn receipt_items(outputs: &[(TimelineEvent, Stamp)]) -> Vec<(SyncItem, Vec<String>)> {
    let receipt = |mark: &im_events::ReadMarked, read: bool| {
        let item = SyncItem::Receipt(ReceiptItem {
            conversation_id: mark.conversation_id.clone(),
            user_id: mark.user_id.clone(),
            read_seq: read.then_some(mark.seq),
            delivered_seq: (!read).then_some(mark.seq),
        });
        (item, mark.receipt_to.clone())
    };
    outputs
        .iter()
        .filter_map(|(event, _)| match event {
            TimelineEvent::Read(read) if !read.receipt_to.is_empty() => Some(receipt(read, true)),
            TimelineEvent::Delivered(delivered) if !delivered.receipt_to.is_empty() => {
                Some(receipt(delivered, false))
            }
            _ => None,
        })
        .collect()
}
