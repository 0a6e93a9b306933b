use super::*;
use im_events::MuteData;

pub(super) fn mute(
    ctx: &Ctx<'_>,
    mute: &MuteData,
    decision: &mut Decision,
) -> Result<(), EventError> {
    let &Ctx {
        event,
        ref conversation_id,
        ..
    } = ctx;
    ctx.require_conversation_as_member(&mute.user_id)?;
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
    Ok(())
}
