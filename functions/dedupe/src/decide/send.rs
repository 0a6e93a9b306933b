use super::*;
use im_events::SendData;

pub(super) fn send(
    ctx: &Ctx<'_>,
    send: &SendData,
    decision: &mut Decision,
) -> Result<(), EventError> {
    let &Ctx {
        event,
        view,
        ref conversation_id,
        ref conversation,
        ref received,
        ..
    } = ctx;
    let mut record = match conversation.clone() {
        Some(record) => record,
        None => match direct_members(conversation_id) {
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
            None => return Err(ctx.not_member(&send.sender_id)),
        },
    };
    if conversation.is_some() {
        ctx.require_member(&send.sender_id)?;
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
        conversation_id,
        Some(&record),
        &send.sender_id,
        &view.members(conversation_id),
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
    decision.outputs.push(TimelineEvent::Committed(
        message.committed(record.diffusion),
    ));
    decision
        .effects
        .push(ConversationEffect::InsertMessage(message.clone()));
    decision
        .effects
        .push(ConversationEffect::PutConversation(record));
    decision
        .effects
        .push(ctx.record_event(Some(seq), Some(message.message_id), &[]));
    Ok(())
}
