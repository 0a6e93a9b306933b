use super::*;
use im_events::{EditData, RecallData};

pub(super) fn edit(
    ctx: &Ctx<'_>,
    edit: &EditData,
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
    ctx.require_conversation_as_member(&edit.editor_id)?;
    let message = view.message(conversation_id, edit.seq).ok_or_else(|| {
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
        recipients: recipients_of(view, conversation_id, conversation),
        conversation_id: conversation_id.clone(),
        seq: edit.seq,
        message_id: message.message_id,
        editor_id: edit.editor_id.clone(),
        body: edit.body.clone(),
        edited_at: received.clone(),
        source: event.source.clone(),
        event_id: event.id.clone(),
    }));
    Ok(())
}

pub(super) fn recall(
    ctx: &Ctx<'_>,
    recall: &RecallData,
    decision: &mut Decision,
) -> Result<(), EventError> {
    let &Ctx {
        event,
        view,
        config,
        ref conversation_id,
        ref conversation,
        received_ms,
        ref received,
        ..
    } = ctx;
    let (_, role) = ctx.require_conversation_as_member(&recall.actor_id)?;
    let message = view.message(conversation_id, recall.seq).ok_or_else(|| {
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
            recipients: recipients_of(view, conversation_id, conversation),
            conversation_id: conversation_id.clone(),
            seq: recall.seq,
            message_id: message.message_id,
            actor_id: recall.actor_id.clone(),
            recalled_at: received.clone(),
            source: event.source.clone(),
            event_id: event.id.clone(),
        }));
    Ok(())
}
