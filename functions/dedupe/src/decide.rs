//! The pure core of `dedupe`: one accepted event and the state it needs →
//! store effects and timeline events, or the reason it is refused.

use std::collections::HashMap;

use im_events::ids::direct_members;
use im_events::{
    message_id_for, parse_rfc3339_ms, Accepted, Command, ConversationChanged, ConversationKind,
    DeliveryMarked, Diffusion, ErrorCode, EventError, HistoryVisibility, MessageEdited,
    MessageReacted, MessageRecalled, ReadMarked, TimelineEvent, UserBlocked, UserMuted,
};
mod blocks;
mod edits;
mod membership;
mod mute;
mod reactions;
mod receipts;
mod send;

use im_store::{ConversationEffect, ConversationRecord, IdempotencyRecord, Role, StoredMessage};

#[derive(Debug, Clone)]
pub struct Config {
    /// Conversations with more members than this use read diffusion.
    pub large_group_threshold: u64,
    /// How long a sender may recall a message, in milliseconds.
    pub recall_window_ms: i64,
    /// What an inbound event must pass to be decided at all.
    pub admission: im_events::admission::Rules,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            large_group_threshold: 500,
            recall_window_ms: 2 * 60 * 1000,
            admission: im_events::admission::Rules {
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                conversation_partitions: im_runtime::topology::topology().partitions.conversation,
            },
        }
    }
}

/// The largest message body, in bytes, unless `IM_MAX_BODY_BYTES` says.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

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

/// What deciding one event reads: the event, the state, and what follows
/// from them for every kind of command.
struct Ctx<'a> {
    event: &'a Accepted,
    view: &'a dyn View,
    config: &'a Config,
    conversation_id: String,
    conversation: Option<ConversationRecord>,
    received: String,
    received_ms: i64,
}

impl Ctx<'_> {
    /// The event's idempotency record: a send's committed message is
    /// rebuilt from the message row, other events keep their outputs.
    fn record_event(
        &self,
        seq: Option<u64>,
        message_id: Option<String>,
        outputs: &[TimelineEvent],
    ) -> ConversationEffect {
        let event = self.event;
        ConversationEffect::RecordEvent(IdempotencyRecord {
            source: event.source.clone(),
            event_id: event.id.clone(),
            conversation_id: self.conversation_id.clone(),
            seq,
            message_id,
            outputs: if seq.is_some() {
                vec![]
            } else {
                outputs.to_vec()
            },
            recorded_at_ms: self.received_ms,
            fingerprint: event.payload.fingerprint(),
        })
    }

    fn require_conversation(&self) -> Result<ConversationRecord, EventError> {
        self.conversation.clone().ok_or_else(|| {
            EventError::new(
                ErrorCode::NotFound,
                format!("conversation {} does not exist", self.conversation_id),
            )
        })
    }

    /// What a user may learn when acting in a conversation: a missing one
    /// answers exactly like one the user is not a member of, and membership
    /// is checked before anything about its messages.
    fn not_member(&self, user: &str) -> EventError {
        EventError::new(
            ErrorCode::NotMember,
            format!("{user} is not a member of {}", self.conversation_id),
        )
    }

    fn require_conversation_as_member(
        &self,
        user: &str,
    ) -> Result<(ConversationRecord, Role), EventError> {
        match &self.conversation {
            Some(record) => self
                .view
                .role(&self.conversation_id, user)
                .map(|role| (record.clone(), role))
                .ok_or_else(|| self.not_member(user)),
            None => Err(self.not_member(user)),
        }
    }

    fn require_member(&self, user: &str) -> Result<Role, EventError> {
        self.view
            .role(&self.conversation_id, user)
            .ok_or_else(|| self.not_member(user))
    }
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

    let ctx = Ctx {
        conversation: view.conversation(&conversation_id),
        event,
        view,
        config,
        conversation_id,
        received,
        received_ms,
    };
    let mut decision = Decision::default();
    match &event.payload {
        Command::Send(send) => send::send(&ctx, send, &mut decision)?,
        Command::Read(read) => receipts::read(&ctx, read, &mut decision)?,
        Command::Delivered(delivered) => receipts::delivered(&ctx, delivered, &mut decision)?,
        Command::React(react) => reactions::react(&ctx, react, &mut decision)?,
        Command::Block(block) | Command::Unblock(block) => {
            blocks::block_or_unblock(&ctx, block, &mut decision)?
        }
        Command::Create(create) => membership::create(&ctx, create, &mut decision)?,
        Command::AddMembers(change) | Command::RemoveMembers(change) => {
            membership::change_members(&ctx, change, &mut decision)?
        }
        Command::Mute(mute) => mute::mute(&ctx, mute, &mut decision)?,
        Command::Edit(edit) => edits::edit(&ctx, edit, &mut decision)?,
        Command::Recall(recall) => edits::recall(&ctx, recall, &mut decision)?,
    }
    if !matches!(event.payload, Command::Send(_)) {
        let outputs = decision.outputs.clone();
        decision
            .effects
            .push(ctx.record_event(None, None, &outputs));
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
                vec![TimelineEvent::Committed(message.committed(diffusion))]
            })
            .unwrap_or_default(),
        None => record.outputs.clone(),
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
