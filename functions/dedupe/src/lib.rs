//! `dedupe`: owner of conversations (partitioned by conversation).
//!
//! For each accepted event, in the order JetStream stored it: drop it if its
//! `(source, id)` was applied before (and republish what it produced then),
//! check membership and permissions, give a message the next `seq` of its
//! conversation, store it, and only then publish the committed event on
//! `im.timeline.<p>.*`. A batch is one store transaction under the partition
//! owner's fence.

pub mod decide;

use std::sync::Arc;

use im_events::partition::partition_of;
use im_events::subjects::timeline_subject;
use im_events::{Accepted, Envelope, Timeline, TimelineEvent, PIPELINE_SOURCE};
use im_runtime::consumer::Identity;
use im_runtime::publish::{publish_all, reply, reply_subject, Outgoing};
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome};
use im_store::{ConversationEffect, ConversationStore};

use crate::decide::{decide, referenced_users, Config, MemoryView};

pub const FUNCTION: &str = "dedupe";

pub struct Dedupe {
    pub js: async_nats::jetstream::Context,
    pub store: Arc<dyn ConversationStore>,
    pub config: Config,
    pub conversation_partitions: u32,
}

/// Load into `view` everything deciding `event` may read.
fn prefetch(
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
            let role = found.iter().find(|m| m.user_id == user).map(|m| m.role);
            view.roles.insert((conversation_id.clone(), user), role);
        }
    }
    if crate::decide::needs_members(&event.payload) && !view.members.contains_key(&conversation_id)
    {
        let stored = store.current_members(&conversation_id)?;
        view.load_members(&conversation_id, stored);
    }
    let mut seqs = Vec::new();
    match &event.payload {
        im_events::Command::Edit(edit) => seqs.push(edit.seq),
        im_events::Command::Recall(recall) => seqs.push(recall.seq),
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

fn identity(event: &Accepted) -> Identity {
    Identity {
        source: Some(event.source.clone()),
        event_id: Some(event.id.clone()),
        event_type: Some(event.payload.type_name().to_string()),
    }
}

/// The decisions of a whole batch.
pub struct BatchDecision {
    /// Applied in one transaction.
    pub effects: Vec<ConversationEffect>,
    /// Published after the transaction commits.
    pub outputs: Vec<TimelineEvent>,
    /// One per message, in order.
    pub outcomes: Vec<Outcome>,
    /// One per message: what a waiting publisher is told once the batch is
    /// durable (the committed message for a send, or the refusal).
    pub answers: Vec<serde_json::Value>,
}

pub fn decide_batch(
    store: &dyn ConversationStore,
    config: &Config,
    batch: &[Incoming],
) -> Result<BatchDecision, im_store::StoreError> {
    let mut view = MemoryView::default();
    let mut effects = Vec::new();
    let mut outputs = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut answers = Vec::with_capacity(batch.len());
    for message in batch {
        let event: Accepted = match im_runtime::parse_internal(message, "accepted event") {
            Ok(event) => event,
            Err(rejected) => {
                outcomes.push(rejected);
                answers.push(serde_json::json!({"ok": false, "code": "not_cloudevent", "reason": "accepted event does not parse"}));
                continue;
            }
        };
        prefetch(store, &mut view, &event)?;
        match decide(&event, &view, config) {
            Ok(decision) => {
                let committed = decision.outputs.iter().find_map(|output| match output {
                    TimelineEvent::Committed(message) => Some(message),
                    _ => None,
                });
                answers.push(match committed {
                    Some(message) => serde_json::json!({"ok": true, "message": message}),
                    None => serde_json::json!({"ok": true}),
                });
                view.absorb(&decision.effects);
                effects.extend(decision.effects);
                outputs.extend(decision.outputs);
                outcomes.push(Outcome::Done);
            }
            Err(error) => {
                answers.push(serde_json::json!({"ok": false, "code": error.code.as_str(), "reason": error.reason}));
                outcomes.push(Outcome::Reject {
                    error,
                    identity: identity(&event),
                })
            }
        }
    }
    Ok(BatchDecision {
        effects,
        outputs,
        outcomes,
        answers,
    })
}

pub fn timeline_message(event: TimelineEvent, partitions: u32) -> Result<Outgoing, String> {
    let key = event.effect_key();
    let id = match &event {
        TimelineEvent::Committed(message) => message.message_id.clone(),
        _ => key.clone(),
    };
    let time = match &event {
        TimelineEvent::Committed(message) => message.sent_at.clone(),
        TimelineEvent::Edited(edit) => edit.edited_at.clone(),
        TimelineEvent::Recalled(recall) => recall.recalled_at.clone(),
        _ => im_events::rfc3339_ms(chrono::Utc::now().timestamp_millis()),
    };
    let subject = timeline_subject(
        partition_of(event.conversation_id(), partitions),
        event.type_name(),
    );
    let envelope: Timeline = Envelope::new(PIPELINE_SOURCE, id, time, event);
    Ok(Outgoing {
        subject,
        message_id: Some(format!("tl:{key}")),
        headers: None,
        payload: serde_json::to_vec(&envelope)
            .map_err(|e| e.to_string())?
            .into(),
    })
}

impl BatchHandler for Dedupe {
    async fn handle(
        &self,
        claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let store = self.store.clone();
        let config = self.config.clone();
        let fence = claim.fence();
        let reply_subjects: Vec<Option<String>> = batch
            .iter()
            .map(|message| reply_subject(&message.headers).map(str::to_string))
            .collect();
        let decision = im_runtime::blocking(move || {
            let decision = decide_batch(store.as_ref(), &config, &batch)?;
            if !decision.effects.is_empty() {
                store.apply(&fence, &decision.effects)?;
            }
            Ok::<_, im_store::StoreError>(decision)
        })
        .await?;
        let BatchDecision {
            outputs,
            outcomes,
            answers,
            ..
        } = decision;
        let outgoing = outputs
            .into_iter()
            .map(|event| timeline_message(event, self.conversation_partitions))
            .collect::<Result<Vec<_>, _>>()
            .map_err(HandlerError::Transient)?;
        publish_all(&self.js, outgoing)
            .await
            .map_err(HandlerError::Transient)?;
        // Only now is every effect durable: tell the waiting publishers.
        let client = self.js.client();
        for (subject, answer) in reply_subjects.iter().zip(&answers) {
            if let Some(subject) = subject {
                reply(&client, subject, answer).await;
            }
        }
        Ok(outcomes)
    }
}

pub async fn run(
    client: async_nats::Client,
    store: Arc<dyn ConversationStore>,
    config: Config,
    instance: String,
    lease_ttl: std::time::Duration,
    shutdown: im_runtime::Shutdown,
) -> anyhow::Result<()> {
    let handler = Arc::new(Dedupe {
        js: async_nats::jetstream::new(client.clone()),
        store,
        config,
        conversation_partitions: im_runtime::topology::topology().partitions.conversation,
    });
    im_runtime::run_function(client, FUNCTION, instance, lease_ttl, handler, shutdown).await
}
