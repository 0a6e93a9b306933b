use super::*;
use im_events::BlockData;

pub(super) fn block_or_unblock(
    ctx: &Ctx<'_>,
    block: &BlockData,
    decision: &mut Decision,
) -> Result<(), EventError> {
    let &Ctx {
        event,
        view,
        ref conversation_id,
        ..
    } = ctx;
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
    Ok(())
}
