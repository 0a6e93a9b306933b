use super::*;
use im_events::{DeliveredData, ReadData};

pub(super) fn read(
    ctx: &Ctx<'_>,
    read: &ReadData,
    decision: &mut Decision,
) -> Result<(), EventError> {
    let &Ctx {
        event,
        view,
        ref conversation_id,
        ref conversation,
        ..
    } = ctx;
    let (record, _) = ctx.require_conversation_as_member(&read.user_id)?;
    if read.seq > record.last_seq {
        return refuse(
            ErrorCode::ReadBeyondLastSeq,
            format!(
                "read mark {} is beyond the last seq {} of {conversation_id}",
                read.seq, record.last_seq
            ),
        );
    }
    let (read_seq, _) = view.receipt(conversation_id, &read.user_id);
    let receipt_to = if read.seq > read_seq {
        decision.effects.push(ConversationEffect::Receipt {
            conversation_id: conversation_id.clone(),
            user_id: read.user_id.clone(),
            read_seq: read.seq,
            delivered_seq: 0,
        });
        receipt_recipients(view, conversation_id, conversation, &read.user_id)
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
    Ok(())
}

pub(super) fn delivered(
    ctx: &Ctx<'_>,
    delivered: &DeliveredData,
    decision: &mut Decision,
) -> Result<(), EventError> {
    let &Ctx {
        event,
        view,
        ref conversation_id,
        ref conversation,
        ..
    } = ctx;
    let (record, _) = ctx.require_conversation_as_member(&delivered.user_id)?;
    // A device cannot hold what was never sent: clamp to the end.
    let seq = delivered.seq.min(record.last_seq);
    let (_, delivered_seq) = view.receipt(conversation_id, &delivered.user_id);
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
                    conversation_id,
                    conversation,
                    &delivered.user_id,
                ),
            }));
    }
    Ok(())
}
