//! The pure core of `dedupe`: one accepted event and the state it needs →
//! store effects and timeline events, or the reason it is refused.

use std::collections::HashMap;

use im_events::ids::direct_members;
use im_events::{
    message_id_for, parse_rfc3339_ms, Accepted, Command, CommittedMessage, ConversationChanged,
    ConversationKind, DeliveryMarked, Diffusion, ErrorCode, EventError, HistoryVisibility,
    MessageEdited, MessageReacted, MessageRecalled, ReadMarked, TimelineEvent, UserBlocked,
    UserMuted,
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
    /// Current members, for the commands that name them as recipients.
    fn members(&self, conversation_id: &str) -> Vec<String>;
    /// Whether `user_id` blocks `other`.
    fn blocked(&self, user_id: &str, other: &str) -> bool;
    /// Whether `user_id` reacted to the message with `emoji`.
    fn reacted(&self, conversation_id: &str, seq: u64, emoji: &str, user_id: &str) -> bool;
    /// A member's (read, delivered) marks as receipts hold them.
    fn receipt(&self, conversation_id: &str, user_id: &str) -> (u64, u64);
    /// The seq at which a member joined (0 for the first members).
    fn joined_seq(&self, conversation_id: &str, user_id: &str) -> u64;
}

/// Commands whose outputs list the conversation's current members (in
/// write diffusion; the shell loads none for large groups).
pub fn needs_members(command: &Command) -> bool {
    matches!(
        command,
        Command::Edit(_)
            | Command::Recall(_)
            | Command::AddMembers(_)
            | Command::RemoveMembers(_)
            | Command::React(_)
            | Command::Read(_)
            | Command::Delivered(_)
    )
}

/// The pair of users whose block a command reads: (who would block, who
/// is blocked). A send in a direct conversation reads whether the other
/// member blocks the sender; a block reads its own pair.
pub fn block_pair(command: &Command, direct_peer: Option<&str>) -> Option<(String, String)> {
    match command {
        Command::Send(send) => direct_peer.map(|peer| (peer.to_string(), send.sender_id.clone())),
        Command::Block(block) | Command::Unblock(block) => {
            Some((block.user_id.clone(), block.blocked_user_id.clone()))
        }
        _ => None,
    }
}

/// The other member of a direct conversation, from its `dm:` id or, for a
/// direct conversation made under another id, from its members.
pub fn direct_peer(
    conversation_id: &str,
    record: Option<&ConversationRecord>,
    me: &str,
    members: &[String],
) -> Option<String> {
    if let Some((a, b)) = direct_members(conversation_id) {
        return Some(if a == me { b } else { a }.to_string());
    }
    match record {
        Some(record) if record.kind == ConversationKind::Direct => {
            members.iter().find(|m| *m != me).cloned()
        }
        _ => None,
    }
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
    if let Some((a, b)) = direct_members(&command.conversation_id()) {
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
        reply_to: message.reply_to,
    }
}

fn diffusion_for(member_count: u64, config: &Config) -> Diffusion {
    if member_count > config.large_group_threshold {
        Diffusion::Read
    } else {
        Diffusion::Write
    }
}

/// Who gets an edit or recall: the members now, in write diffusion.
fn recipients_of(
    view: &dyn View,
    conversation_id: &str,
    conversation: &Option<ConversationRecord>,
) -> Vec<String> {
    match conversation {
        Some(record) if record.diffusion == Diffusion::Write => view.members(conversation_id),
        _ => vec![],
    }
}

/// Who is told of a member's receipt: the other members, in write
/// diffusion (large groups get counts on request, never pushes).
fn receipt_recipients(
    view: &dyn View,
    conversation_id: &str,
    conversation: &Option<ConversationRecord>,
    user: &str,
) -> Vec<String> {
    let mut others = recipients_of(view, conversation_id, conversation);
    others.retain(|member| member != user);
    others
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
        if !same_event(&record, event, view) {
            // Another event under a (source, id) already used: answering it
            // as the earlier one would ack a message that is stored nowhere.
            return refuse(
                ErrorCode::Conflict,
                format!(
                    "event {} of {} was already used for a different event (its type, actor or conversation differ); send this one with a new id",
                    event.id, event.source
                ),
            );
        }
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
            fingerprint: event.payload.fingerprint(),
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
    // What a user may learn when acting in a conversation: a missing one
    // answers exactly like one the user is not a member of, and membership
    // is checked before anything about its messages.
    let not_member = |user: &str| {
        EventError::new(
            ErrorCode::NotMember,
            format!("{user} is not a member of {conversation_id}"),
        )
    };
    let require_conversation_as_member = |user: &str| match &conversation {
        Some(record) => view
            .role(&conversation_id, user)
            .map(|role| (record.clone(), role))
            .ok_or_else(|| not_member(user)),
        None => Err(not_member(user)),
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
                            history_visibility: HistoryVisibility::Joined,
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
                                members: vec![],
                                source: event.source.clone(),
                                event_id: format!("{}#create", event.id),
                            }));
                        record
                    }
                    None => return Err(not_member(&send.sender_id)),
                },
            };
            if conversation.is_some() {
                require_member(&send.sender_id)?;
            }
            if let Some(reply_to) = send.reply_to {
                if reply_to == 0 || reply_to > record.last_seq {
                    return refuse(
                        ErrorCode::InvalidReply,
                        format!(
                            "reply_to {reply_to} is not a message of {conversation_id} (its last seq is {})",
                            record.last_seq
                        ),
                    );
                }
            }
            let peer = direct_peer(
                &conversation_id,
                Some(&record),
                &send.sender_id,
                &view.members(&conversation_id),
            );
            if let Some(peer) = peer {
                if view.blocked(&peer, &send.sender_id) {
                    // Seed 002: the letter goes back to its sender.
                    return refuse(
                        ErrorCode::Blocked,
                        format!(
                            "{peer} does not accept direct messages from {}",
                            send.sender_id
                        ),
                    );
                }
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
                reply_to: send.reply_to,
                reactions: vec![],
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
            let (record, _) = require_conversation_as_member(&read.user_id)?;
            if read.seq > record.last_seq {
                return refuse(
                    ErrorCode::ReadBeyondLastSeq,
                    format!(
                        "read mark {} is beyond the last seq {} of {conversation_id}",
                        read.seq, record.last_seq
                    ),
                );
            }
            let (read_seq, _) = view.receipt(&conversation_id, &read.user_id);
            let receipt_to = if read.seq > read_seq {
                decision.effects.push(ConversationEffect::Receipt {
                    conversation_id: conversation_id.clone(),
                    user_id: read.user_id.clone(),
                    read_seq: read.seq,
                    delivered_seq: 0,
                });
                receipt_recipients(view, &conversation_id, &conversation, &read.user_id)
            } else {
                vec![]
            };
            decision.outputs.push(TimelineEvent::Read(ReadMarked {
                conversation_id: conversation_id.clone(),
                user_id: read.user_id.clone(),
                seq: read.seq,
                source: event.source.clone(),
                event_id: event.id.clone(),
                receipt_to,
            }));
        }
        Command::Delivered(delivered) => {
            let (record, _) = require_conversation_as_member(&delivered.user_id)?;
            // A device cannot hold what was never sent: clamp to the end.
            let seq = delivered.seq.min(record.last_seq);
            let (_, delivered_seq) = view.receipt(&conversation_id, &delivered.user_id);
            if seq > delivered_seq {
                decision.effects.push(ConversationEffect::Receipt {
                    conversation_id: conversation_id.clone(),
                    user_id: delivered.user_id.clone(),
                    read_seq: 0,
                    delivered_seq: seq,
                });
                decision
                    .outputs
                    .push(TimelineEvent::Delivered(DeliveryMarked {
                        conversation_id: conversation_id.clone(),
                        user_id: delivered.user_id.clone(),
                        seq,
                        source: event.source.clone(),
                        event_id: event.id.clone(),
                        receipt_to: receipt_recipients(
                            view,
                            &conversation_id,
                            &conversation,
                            &delivered.user_id,
                        ),
                    }));
            }
        }
        Command::React(react) => {
            let (record, _) = require_conversation_as_member(&react.user_id)?;
            // A member of a `joined` conversation cannot see what came
            // before their join: it answers as if it did not exist.
            let readable_from = match record.history_visibility {
                HistoryVisibility::Joined => view.joined_seq(&conversation_id, &react.user_id),
                HistoryVisibility::Shared => 0,
            };
            let message = view
                .message(&conversation_id, react.seq)
                .filter(|message| message.recalled_at.is_none() && message.seq > readable_from)
                .ok_or_else(|| {
                    EventError::new(
                        ErrorCode::NotFound,
                        format!("{conversation_id} has no message {} to react to", react.seq),
                    )
                })?;
            let present = view.reacted(&conversation_id, react.seq, &react.emoji, &react.user_id);
            // Idempotent per (user, emoji): a repeat changes nothing.
            if present == react.remove {
                decision.effects.push(ConversationEffect::React {
                    conversation_id: conversation_id.clone(),
                    seq: react.seq,
                    emoji: react.emoji.clone(),
                    user_id: react.user_id.clone(),
                    add: !react.remove,
                });
                decision
                    .outputs
                    .push(TimelineEvent::Reacted(MessageReacted {
                        recipients: recipients_of(view, &conversation_id, &conversation),
                        conversation_id: conversation_id.clone(),
                        seq: react.seq,
                        message_id: message.message_id,
                        user_id: react.user_id.clone(),
                        emoji: react.emoji.clone(),
                        removed: react.remove,
                        reacted_at: received.clone(),
                        source: event.source.clone(),
                        event_id: event.id.clone(),
                    }));
            }
        }
        Command::Block(block) | Command::Unblock(block) => {
            let blocking = matches!(event.payload, Command::Block(_));
            if view.blocked(&block.user_id, &block.blocked_user_id) != blocking {
                decision.effects.push(ConversationEffect::Block {
                    user_id: block.user_id.clone(),
                    blocked_user_id: block.blocked_user_id.clone(),
                    blocked: blocking,
                });
                decision.outputs.push(TimelineEvent::Blocked(UserBlocked {
                    conversation_id: conversation_id.clone(),
                    user_id: block.user_id.clone(),
                    blocked_user_id: block.blocked_user_id.clone(),
                    blocked: blocking,
                    source: event.source.clone(),
                    event_id: event.id.clone(),
                }));
            }
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
                    history_visibility: create.history_visibility,
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
                    members: vec![],
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
            let mode_changed = previous != record.diffusion;
            let members = if mode_changed {
                let mut after: std::collections::BTreeSet<String> =
                    view.members(&conversation_id).into_iter().collect();
                for user in &affected {
                    if adding {
                        after.insert(user.clone());
                    } else {
                        after.remove(user);
                    }
                }
                after.into_iter().collect()
            } else {
                vec![]
            };
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
                    mode_changed,
                    members,
                    source: event.source.clone(),
                    event_id: event.id.clone(),
                }));
            decision
                .effects
                .push(ConversationEffect::PutConversation(record));
        }
        Command::Mute(mute) => {
            require_conversation_as_member(&mute.user_id)?;
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
            require_conversation_as_member(&edit.editor_id)?;
            let message = view.message(&conversation_id, edit.seq).ok_or_else(|| {
                EventError::new(
                    ErrorCode::NotFound,
                    format!("{conversation_id} has no message {}", edit.seq),
                )
            })?;
            if message.sender_id != edit.editor_id {
                return refuse(
                    ErrorCode::Forbidden,
                    format!("only its sender may edit message {}", edit.seq),
                );
            }
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
                recipients: recipients_of(view, &conversation_id, &conversation),
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
            let (_, role) = require_conversation_as_member(&recall.actor_id)?;
            let message = view.message(&conversation_id, recall.seq).ok_or_else(|| {
                EventError::new(
                    ErrorCode::NotFound,
                    format!("{conversation_id} has no message {}", recall.seq),
                )
            })?;
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
                    recipients: recipients_of(view, &conversation_id, &conversation),
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

/// Whether `event` is the event `record` was made for, not another one
/// reusing its (source, id). Records from before fingerprints are compared
/// by what they hold: the conversation, and a send's stored sender.
fn same_event(record: &IdempotencyRecord, event: &Accepted, view: &dyn View) -> bool {
    if record.conversation_id != event.payload.conversation_id() {
        return false;
    }
    if !record.fingerprint.is_empty() {
        return record.fingerprint == event.payload.fingerprint();
    }
    match (&event.payload, record.seq) {
        (Command::Send(send), Some(seq)) => view
            .message(&record.conversation_id, seq)
            .is_none_or(|message| message.sender_id == send.sender_id),
        (Command::Send(_), None) | (_, Some(_)) => false,
        (_, None) => true,
    }
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
    /// Current members of conversations whose commands list them.
    pub members: HashMap<String, std::collections::BTreeSet<String>>,
    /// Membership changes absorbed for conversations whose members were not
    /// loaded yet: applied on top of the store's (pre-batch) members when
    /// they are loaded.
    pub member_changes: HashMap<String, Vec<(String, bool)>>,
    /// (user, blocked user) → blocks.
    pub blocks: HashMap<(String, String), bool>,
    /// (conversation, seq, emoji, user) → reacted.
    pub reactions: HashMap<(String, u64, String, String), bool>,
    /// (conversation, user) → (read, delivered) marks.
    pub receipts: HashMap<(String, String), (u64, u64)>,
    /// (conversation, member) → the seq at which they joined.
    pub joined: HashMap<(String, String), u64>,
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
    fn members(&self, conversation_id: &str) -> Vec<String> {
        self.members
            .get(conversation_id)
            .map(|members| members.iter().cloned().collect())
            .unwrap_or_default()
    }
    fn blocked(&self, user_id: &str, other: &str) -> bool {
        self.blocks
            .get(&(user_id.to_string(), other.to_string()))
            .copied()
            .unwrap_or(false)
    }
    fn reacted(&self, conversation_id: &str, seq: u64, emoji: &str, user_id: &str) -> bool {
        self.reactions
            .get(&(
                conversation_id.to_string(),
                seq,
                emoji.to_string(),
                user_id.to_string(),
            ))
            .copied()
            .unwrap_or(false)
    }
    fn receipt(&self, conversation_id: &str, user_id: &str) -> (u64, u64) {
        self.receipts
            .get(&(conversation_id.to_string(), user_id.to_string()))
            .copied()
            .unwrap_or_default()
    }
    fn joined_seq(&self, conversation_id: &str, user_id: &str) -> u64 {
        self.joined
            .get(&(conversation_id.to_string(), user_id.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

impl MemoryView {
    /// Take the store's (pre-batch) members of a conversation, with the
    /// batch's own changes so far applied on top.
    pub fn load_members(&mut self, conversation_id: &str, stored: Vec<String>) {
        let mut members: std::collections::BTreeSet<String> = stored.into_iter().collect();
        for (user, added) in self
            .member_changes
            .remove(conversation_id)
            .unwrap_or_default()
        {
            if added {
                members.insert(user);
            } else {
                members.remove(&user);
            }
        }
        self.members.insert(conversation_id.to_string(), members);
    }

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
                    after_seq,
                } => {
                    self.joined
                        .insert((conversation_id.clone(), user_id.clone()), *after_seq);
                    self.roles
                        .insert((conversation_id.clone(), user_id.clone()), Some(*role));
                    match self.members.get_mut(conversation_id) {
                        Some(members) => {
                            members.insert(user_id.clone());
                        }
                        None => self
                            .member_changes
                            .entry(conversation_id.clone())
                            .or_default()
                            .push((user_id.clone(), true)),
                    }
                }
                ConversationEffect::RemoveMember {
                    conversation_id,
                    user_id,
                    ..
                } => {
                    self.roles
                        .insert((conversation_id.clone(), user_id.clone()), None);
                    match self.members.get_mut(conversation_id) {
                        Some(members) => {
                            members.remove(user_id);
                        }
                        None => self
                            .member_changes
                            .entry(conversation_id.clone())
                            .or_default()
                            .push((user_id.clone(), false)),
                    }
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
                ConversationEffect::React {
                    conversation_id,
                    seq,
                    emoji,
                    user_id,
                    add,
                } => {
                    self.reactions.insert(
                        (
                            conversation_id.clone(),
                            *seq,
                            emoji.clone(),
                            user_id.clone(),
                        ),
                        *add,
                    );
                }
                ConversationEffect::Block {
                    user_id,
                    blocked_user_id,
                    blocked,
                } => {
                    self.blocks
                        .insert((user_id.clone(), blocked_user_id.clone()), *blocked);
                }
                ConversationEffect::Receipt {
                    conversation_id,
                    user_id,
                    read_seq,
                    delivered_seq,
                } => {
                    let marks = self
                        .receipts
                        .entry((conversation_id.clone(), user_id.clone()))
                        .or_default();
                    marks.0 = marks.0.max(*read_seq);
                    marks.1 = marks.1.max(*delivered_seq);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
