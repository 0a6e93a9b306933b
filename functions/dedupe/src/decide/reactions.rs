use super::*;
use im_events::ReactData;

pub(super) fn react(
    ctx: &Ctx<'_>,
    react: &ReactData,
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
    let (record, _) = ctx.require_conversation_as_member(&react.user_id)?;
    // A member of a `joined` conversation cannot see what came
    // before their join: it answers as if it did not exist.
    let readable_from = match record.history_visibility {
        HistoryVisibility::Joined => view.joined_seq(conversation_id, &react.user_id),
        HistoryVisibility::Shared => 0,
    };
    let message = view
        .message(conversation_id, react.seq)
        .filter(|message| message.recalled_at.is_none() && message.seq > readable_from)
        .ok_or_else(|| {
            EventError::new(
                ErrorCode::NotFound,
                format!("{conversation_id} has no message {} to react to", react.seq),
            )
        })?;
    let present = view.reacted(conversation_id, react.seq, &react.emoji, &react.user_id);
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
                recipients: recipients_of(view, conversation_id, conversation),
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
    Ok(())
}
