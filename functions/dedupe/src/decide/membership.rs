use super::*;
use im_events::{CreateData, MembersData};

pub(super) fn create(
    ctx: &Ctx<'_>,
    create: &CreateData,
    decision: &mut Decision,
) -> Result<(), EventError> {
    let &Ctx {
        event,
        config,
        ref conversation_id,
        ref conversation,
        ref received,
        ..
    } = ctx;
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
    Ok(())
}

pub(super) fn change_members(
    ctx: &Ctx<'_>,
    change: &MembersData,
    decision: &mut Decision,
) -> Result<(), EventError> {
    let &Ctx {
        event,
        view,
        config,
        ref conversation_id,
        ..
    } = ctx;
    let mut record = ctx.require_conversation()?;
    if record.kind == ConversationKind::Direct {
        return refuse(
            ErrorCode::Forbidden,
            format!("{conversation_id} is a direct conversation; its members cannot change"),
        );
    }
    let adding = matches!(event.payload, Command::AddMembers(_));
    let affected: Vec<String> = change
        .members
        .iter()
        .filter(|user| view.role(conversation_id, user).is_some() != adding)
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
            view.members(conversation_id).into_iter().collect();
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
    Ok(())
}
