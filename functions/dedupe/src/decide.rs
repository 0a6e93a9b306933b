//! The pure core of `dedupe`: one accepted event and the state it needs →
//! store effects and timeline events, or the reason it is refused.

use std::collections::HashMap;

use im_events::ids::direct_members;
use im_events::{
    message_id_for, parse_rfc3339_ms, Accepted, Command, CommittedMessage, ConversationChanged,
    ConversationKind, Diffusion, ErrorCode, EventError, MessageEdited, MessageRecalled, ReadMarked,
    TimelineEvent, UserMuted,
};
use im_store::{ConversationEffect, ConversationRecord, IdempotencyRecord, Role, StoredMessage};

#[derive(Debug, Clone)]
pub struct Config {
    /// Conversations with more members than this use read diffusion.
    pub large_group_threshold: u64,
    /// How long a sender may recall a message, in milliseconds.
    pub recall_window_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            large_group_threshold: 500,
            recall_window_ms: 2 * 60 * 1000,
        }
    }
}

/// The state a decision reads. `None` means "known not to exist"; the shell
/// loads everything a command can touch before deciding.
pub trait View {
    fn idempotency(&self, source: &str, event_id: &str) -> Option<IdempotencyRecord>;
    fn conversation(&self, conversation_id: &str) -> Option<ConversationRecord>;
    fn role(&self, conversation_id: &str, user_id: &str) -> Option<Role>;
    fn message(&self, conversation_id: &str, seq: u64) -> Option<StoredMessage>;
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub effects: Vec<ConversationEffect>,
    pub outputs: Vec<TimelineEvent>,
}

/// Users (besides the actor) whose membership a command reads.
pub fn referenced_users(command: &Command) -> Vec<String> {
    let mut users: Vec<String> = command.actor().map(str::to_string).into_iter().collect();
    match command {
        Command::Create(create) => users.extend(create.members.iter().cloned()),
        Command::AddMembers(change) | Command::RemoveMembers(change) => {
            users.extend(change.members.iter().cloned())
        }
        _ => {}
    }
    if let Some((a, b)) = direct_members(command.conversation_id()) {
        users.push(a.to_string());
        users.push(b.to_string());
    }
    users
}

pub fn committed_from_stored(message: &StoredMessage, diffusion: Diffusion) -> CommittedMessage {
    CommittedMessage {
        message_id: message.message_id.clone(),
        conversation_id: message.conversation_id.clone(),
        seq: message.seq,
        sender_id: message.sender_id.clone(),
        source: message.source.clone(),
        event_id: message.event_id.clone(),
        sent_at: message.sent_at.clone(),
        kind: message.kind,
        body: message.body.clone(),
        mentions: message.mentions.clone(),
        diffusion,
    }
}

fn diffusion_for(member_count: u64, config: &Config) -> Diffusion {
    if member_count > config.large_group_threshold {
        Diffusion::Read
    } else {
        Diffusion::Write
    }
}

fn refuse<T>(code: ErrorCode, reason: String) -> Result<T, EventError> {
    Err(EventError::new(code, reason))
}

pub fn decide(event: &Accepted, view: &dyn View, config: &Config) -> Result<Decision, EventError> {
    let received = event
        .imreceived
        .clone()
        .unwrap_or_else(|| event.time.clone());
    let received_ms = parse_rfc3339_ms(&received).unwrap_or(0);
    let conversation_id = event.payload.conversation_id().to_string();

    if let Some(record) = view.idempotency(&event.source, &event.id) {
        return Ok(replay_duplicate(&record, view));
    }

    let conversation = view.conversation(&conversation_id);
    let mut decision = Decision::default();
    let record_event = |seq: Option<u64>, message_id: Option<String>, outputs: &[TimelineEvent]| {
        ConversationEffect::RecordEvent(IdempotencyRecord {
            source: event.source.clone(),
            event_id: event.id.clone(),
            conversation_id: conversation_id.clone(),
            seq,
            message_id,
            // A send's committed message is rebuilt from the message row.
            outputs: if seq.is_some() {
                serde_json::Value::Array(vec![])
            } else {
                serde_json::to_value(outputs).unwrap_or_default()
            },
            recorded_at_ms: received_ms,
        })
    };
    let require_conversation = || {
        conversation.clone().ok_or_else(|| {
            EventError::new(
                ErrorCode::NotFound,
                format!("conversation {conversation_id} does not exist"),
            )
        })
    };
    let require_member = |user: &str| {
        view.role(&conversation_id, user).ok_or_else(|| {
            EventError::new(
                ErrorCode::NotMember,
                format!("{user} is not a member of {conversation_id}"),
            )
        })
    };

    match &event.payload {
        Command::Send(send) => {
            let mut record = match conversation.clone() {
                Some(record) => record,
                None => match direct_members(&conversation_id) {
                    // A direct conversation exists on its first message.
                    Some((a, b)) => {
                        if send.sender_id != a && send.sender_id != b {
                            return refuse(
                                ErrorCode::NotMember,
                                format!("{} is not a member of {conversation_id}", send.sender_id),
                            );
                        }
                        let record = ConversationRecord {
                            conversation_id: conversation_id.clone(),
                            kind: ConversationKind::Direct,
                            title: None,
                            last_seq: 0,
                            diffusion: Diffusion::Write,
                            member_count: 2,
                            created_at: received.clone(),
                        };
                        let members = vec![a.to_string(), b.to_string()];
                        for member in &members {
                            decision.effects.push(ConversationEffect::AddMember {
                                conversation_id: conversation_id.clone(),
                                user_id: member.clone(),
                                role: Role::Member,
                                after_seq: 0,
                            });
                        }
                        decision
                            .outputs
                            .push(TimelineEvent::Changed(ConversationChanged {
                                conversation_id: conversation_id.clone(),
                                kind: ConversationKind::Direct,
                                title: None,
                                added: members,
                                removed: vec![],
                                at_seq: 0,
                                diffusion: Diffusion::Write,
                                mode_changed: false,
                                source: event.source.clone(),
                                event_id: format!("{}#create", event.id),
                            }));
                        record
                    }
                    None => {
                        return refuse(
                            ErrorCode::NotFound,
                            format!("conversation {conversation_id} does not exist"),
                        )
                    }
                },
            };
            if conversation.is_some() {
                require_member(&send.sender_id)?;
            }
            let seq = record.last_seq + 1;
            let message = StoredMessage {
                conversation_id: conversation_id.clone(),
                seq,
                message_id: message_id_for(&event.source, &event.id),
                sender_id: send.sender_id.clone(),
                source: event.source.clone(),
                event_id: event.id.clone(),
                sent_at: received.clone(),
                kind: send.kind,
                body: send.body.clone(),
                mentions: send.mentions.clone(),
                edited_at: None,
                recalled_at: None,
                recalled_by: None,
            };
            record.last_seq = seq;
            decision
                .outputs
                .push(TimelineEvent::Committed(committed_from_stored(
                    &message,
                    record.diffusion,
                )));
            decision
                .effects
                .push(ConversationEffect::InsertMessage(message.clone()));
            decision
                .effects
                .push(ConversationEffect::PutConversation(record));
            decision
                .effects
                .push(record_event(Some(seq), Some(message.message_id), &[]));
        }
        Command::Read(read) => {
            let record = require_conversation()?;
            require_member(&read.user_id)?;
            if read.seq > record.last_seq {
                return refuse(
                    ErrorCode::ReadBeyondLastSeq,
                    format!(
                        "read mark {} is beyond the last seq {} of {conversation_id}",
                        read.seq, record.last_seq
                    ),
                );
            }
            decision.outputs.push(TimelineEvent::Read(ReadMarked {
                conversation_id: conversation_id.clone(),
                user_id: read.user_id.clone(),
                seq: read.seq,
                source: event.source.clone(),
                event_id: event.id.clone(),
            }));
        }
        Command::Create(create) => {
            if conversation.is_some() {
                return refuse(
                    ErrorCode::Conflict,
                    format!("conversation {conversation_id} already exists"),
                );
            }
            let member_count = create.members.len() as u64;
            let diffusion = diffusion_for(member_count, config);
            decision
                .effects
                .push(ConversationEffect::PutConversation(ConversationRecord {
                    conversation_id: conversation_id.clone(),
                    kind: create.kind,
                    title: create.title.clone(),
                    last_seq: 0,
                    diffusion,
                    member_count,
                    created_at: received.clone(),
                }));
            for member in &create.members {
                let role = if create.admins.contains(member) {
                    Role::Admin
                } else {
                    Role::Member
                };
                decision.effects.push(ConversationEffect::AddMember {
                    conversation_id: conversation_id.clone(),
                    user_id: member.clone(),
                    role,
                    after_seq: 0,
                });
            }
            decision
                .outputs
                .push(TimelineEvent::Changed(ConversationChanged {
                    conversation_id: conversation_id.clone(),
                    kind: create.kind,
                    title: create.title.clone(),
                    added: create.members.clone(),
                    removed: vec![],
                    at_seq: 0,
                    diffusion,
                    mode_changed: false,
                    source: event.source.clone(),
                    event_id: event.id.clone(),
                }));
        }
        Command::AddMembers(change) | Command::RemoveMembers(change) => {
            let mut record = require_conversation()?;
            if record.kind == ConversationKind::Direct {
                return refuse(
                    ErrorCode::Forbidden,
                    format!(
                        "{conversation_id} is a direct conversation; its members cannot change"
                    ),
                );
            }
            let adding = matches!(event.payload, Command::AddMembers(_));
            let affected: Vec<String> = change
                .members
                .iter()
                .filter(|user| view.role(&conversation_id, user).is_some() != adding)
                .cloned()
                .collect();
            for user in &affected {
                decision.effects.push(if adding {
                    ConversationEffect::AddMember {
                        conversation_id: conversation_id.clone(),
                        user_id: user.clone(),
                        role: Role::Member,
                        after_seq: record.last_seq,
                    }
                } else {
                    ConversationEffect::RemoveMember {
                        conversation_id: conversation_id.clone(),
                        user_id: user.clone(),
                        after_seq: record.last_seq,
                    }
                });
            }
            let previous = record.diffusion;
            record.member_count = if adding {
                record.member_count + affected.len() as u64
            } else {
                record.member_count.saturating_sub(affected.len() as u64)
            };
            record.diffusion = diffusion_for(record.member_count, config);
            decision
                .outputs
                .push(TimelineEvent::Changed(ConversationChanged {
                    conversation_id: conversation_id.clone(),
                    kind: record.kind,
                    title: record.title.clone(),
                    added: if adding { affected.clone() } else { vec![] },
                    removed: if adding { vec![] } else { affected.clone() },
                    at_seq: record.last_seq,
                    diffusion: record.diffusion,
                    mode_changed: previous != record.diffusion,
                    source: event.source.clone(),
                    event_id: event.id.clone(),
                }));
            decision
                .effects
                .push(ConversationEffect::PutConversation(record));
        }
        Command::Mute(mute) => {
            require_conversation()?;
            require_member(&mute.user_id)?;
            let until_ms = match &mute.until {
                None => None,
                Some(text) => Some(parse_rfc3339_ms(text).ok_or_else(|| {
                    EventError::new(
                        ErrorCode::SchemaViolation,
                        format!("until {text:?} is not an RFC 3339 time"),
                    )
                })?),
            };
            decision.outputs.push(TimelineEvent::Muted(UserMuted {
                user_id: mute.user_id.clone(),
                conversation_id: conversation_id.clone(),
                until_ms,
                source: event.source.clone(),
                event_id: event.id.clone(),
            }));
        }
        Command::Edit(edit) => {
            require_conversation()?;
            let message = view.message(&conversation_id, edit.seq).ok_or_else(|| {
                EventError::new(
                    ErrorCode::NotFound,
                    format!("{conversation_id} has no message {}", edit.seq),
                )
            })?;
            if message.sender_id != edit.editor_id {
                return refuse(
                    ErrorCode::Forbidden,
                    format!(
                        "only the sender {} may edit message {}",
                        message.sender_id, edit.seq
                    ),
                );
            }
            require_member(&edit.editor_id)?;
            if message.recalled_at.is_some() {
                return refuse(
                    ErrorCode::Conflict,
                    format!("message {} was recalled and cannot be edited", edit.seq),
                );
            }
            decision.effects.push(ConversationEffect::EditMessage {
                conversation_id: conversation_id.clone(),
                seq: edit.seq,
                body: edit.body.clone(),
                edited_at: received.clone(),
            });
            decision.outputs.push(TimelineEvent::Edited(MessageEdited {
                conversation_id: conversation_id.clone(),
                seq: edit.seq,
                message_id: message.message_id,
                editor_id: edit.editor_id.clone(),
                body: edit.body.clone(),
                edited_at: received.clone(),
                source: event.source.clone(),
                event_id: event.id.clone(),
            }));
        }
        Command::Recall(recall) => {
            require_conversation()?;
            let message = view.message(&conversation_id, recall.seq).ok_or_else(|| {
                EventError::new(
                    ErrorCode::NotFound,
                    format!("{conversation_id} has no message {}", recall.seq),
                )
            })?;
            let role = require_member(&recall.actor_id)?;
            if message.recalled_at.is_some() {
                return refuse(
                    ErrorCode::Conflict,
                    format!("message {} is already recalled", recall.seq),
                );
            }
            if role != Role::Admin {
                if message.sender_id != recall.actor_id {
                    return refuse(
                        ErrorCode::Forbidden,
                        format!(
                            "only the sender or a group admin may recall message {}",
                            recall.seq
                        ),
                    );
                }
                let sent_ms = parse_rfc3339_ms(&message.sent_at).unwrap_or(0);
                if received_ms - sent_ms > config.recall_window_ms {
                    return refuse(
                        ErrorCode::RecallWindowExpired,
                        format!(
                            "message {} is older than the {} s recall window",
                            recall.seq,
                            config.recall_window_ms / 1000
                        ),
                    );
                }
            }
            decision.effects.push(ConversationEffect::RecallMessage {
                conversation_id: conversation_id.clone(),
                seq: recall.seq,
                recalled_at: received.clone(),
                recalled_by: recall.actor_id.clone(),
            });
            decision
                .outputs
                .push(TimelineEvent::Recalled(MessageRecalled {
                    conversation_id: conversation_id.clone(),
                    seq: recall.seq,
                    message_id: message.message_id,
                    actor_id: recall.actor_id.clone(),
                    recalled_at: received.clone(),
                    source: event.source.clone(),
                    event_id: event.id.clone(),
                }));
        }
    }
    if !matches!(event.payload, Command::Send(_)) {
        let outputs = decision.outputs.clone();
        decision.effects.push(record_event(None, None, &outputs));
    }
    Ok(decision)
}

/// A duplicate changes nothing and publishes again what the original
/// published, in case the original's publish was lost in a crash.
fn replay_duplicate(record: &IdempotencyRecord, view: &dyn View) -> Decision {
    let outputs = match record.seq {
        Some(seq) => view
            .message(&record.conversation_id, seq)
            .map(|message| {
                let diffusion = view
                    .conversation(&record.conversation_id)
                    .map(|c| c.diffusion)
                    .unwrap_or_default();
                vec![TimelineEvent::Committed(committed_from_stored(
                    &message, diffusion,
                ))]
            })
            .unwrap_or_default(),
        None => serde_json::from_value(record.outputs.clone()).unwrap_or_default(),
    };
    Decision {
        effects: vec![],
        outputs,
    }
}

/// In-memory state for tests and for the batch overlay: a [`View`] that
/// absorbs effects as they are decided.
#[derive(Debug, Default, Clone)]
pub struct MemoryView {
    pub idempotency: HashMap<(String, String), Option<IdempotencyRecord>>,
    pub conversations: HashMap<String, Option<ConversationRecord>>,
    pub roles: HashMap<(String, String), Option<Role>>,
    pub messages: HashMap<(String, u64), Option<StoredMessage>>,
}

impl View for MemoryView {
    fn idempotency(&self, source: &str, event_id: &str) -> Option<IdempotencyRecord> {
        self.idempotency
            .get(&(source.to_string(), event_id.to_string()))
            .cloned()
            .flatten()
    }
    fn conversation(&self, conversation_id: &str) -> Option<ConversationRecord> {
        self.conversations.get(conversation_id).cloned().flatten()
    }
    fn role(&self, conversation_id: &str, user_id: &str) -> Option<Role> {
        self.roles
            .get(&(conversation_id.to_string(), user_id.to_string()))
            .cloned()
            .flatten()
    }
    fn message(&self, conversation_id: &str, seq: u64) -> Option<StoredMessage> {
        self.messages
            .get(&(conversation_id.to_string(), seq))
            .cloned()
            .flatten()
    }
}

impl MemoryView {
    /// Make later decisions in the same batch see these effects.
    pub fn absorb(&mut self, effects: &[ConversationEffect]) {
        for effect in effects {
            match effect {
                ConversationEffect::PutConversation(record) => {
                    self.conversations
                        .insert(record.conversation_id.clone(), Some(record.clone()));
                }
                ConversationEffect::AddMember {
                    conversation_id,
                    user_id,
                    role,
                    ..
                } => {
                    self.roles
                        .insert((conversation_id.clone(), user_id.clone()), Some(*role));
                }
                ConversationEffect::RemoveMember {
                    conversation_id,
                    user_id,
                    ..
                } => {
                    self.roles
                        .insert((conversation_id.clone(), user_id.clone()), None);
                }
                ConversationEffect::InsertMessage(message) => {
                    self.messages.insert(
                        (message.conversation_id.clone(), message.seq),
                        Some(message.clone()),
                    );
                }
                ConversationEffect::EditMessage {
                    conversation_id,
                    seq,
                    body,
                    edited_at,
                } => {
                    if let Some(Some(message)) =
                        self.messages.get_mut(&(conversation_id.clone(), *seq))
                    {
                        message.body = body.clone();
                        message.edited_at = Some(edited_at.clone());
                    }
                }
                ConversationEffect::RecallMessage {
                    conversation_id,
                    seq,
                    recalled_at,
                    recalled_by,
                } => {
                    if let Some(Some(message)) =
                        self.messages.get_mut(&(conversation_id.clone(), *seq))
                    {
                        message.body = serde_json::json!({});
                        message.recalled_at = Some(recalled_at.clone());
                        message.recalled_by = Some(recalled_by.clone());
                    }
                }
                ConversationEffect::RecordEvent(record) => {
                    self.idempotency.insert(
                        (record.source.clone(), record.event_id.clone()),
                        Some(record.clone()),
                    );
                }
            }
        }
    }
}
