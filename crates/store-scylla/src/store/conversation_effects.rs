//! Applying conversation effects on ScyllaDB.

use super::*;

pub(super) async fn apply_conversation_effect(
    db: &Inner,
    effect: &ConversationEffect,
) -> StoreResult<()> {
    match effect {
        ConversationEffect::PutConversation(record) => {
            let current: Option<ConversationRow> = db
                .one("conversation", vec![text(&record.conversation_id)])
                .await?;
            let last_seq = current
                .map(|row| row.3 as u64)
                .unwrap_or(0)
                .max(record.last_seq);
            db.exec("conversation_put", conversation_values(record, last_seq))
                .await?;
            db.exec(
                "index_put",
                vec![
                    Some(CqlValue::Int(index_shard(&record.conversation_id))),
                    text(&record.conversation_id),
                    text(record.kind.as_str()),
                ],
            )
            .await?;
        }
        ConversationEffect::AddMember {
            conversation_id,
            user_id,
            role,
            after_seq,
        } => {
            db.exec(
                "member_add",
                vec![
                    text(conversation_id),
                    text(user_id),
                    big(*after_seq),
                    text(role.as_str()),
                ],
            )
            .await?;
        }
        ConversationEffect::RemoveMember {
            conversation_id,
            user_id,
            after_seq,
        } => {
            let rows: Vec<(i64, String, Option<i64>)> = db
                .select("member", vec![text(conversation_id), text(user_id)])
                .await?;
            for (added, _, removed) in rows {
                if removed.is_none() {
                    db.exec(
                        "member_remove",
                        vec![
                            big(*after_seq),
                            text(conversation_id),
                            text(user_id),
                            big(added),
                        ],
                    )
                    .await?;
                }
            }
        }
        ConversationEffect::InsertMessage(message) => {
            // The seq is claimed (validated) already.
            db.exec("hot_put", message_values(message)).await?;
        }
        ConversationEffect::EditMessage {
            conversation_id,
            seq,
            body,
            edited_at,
        } => {
            let key = vec![text(conversation_id), big(message_bucket(*seq)), big(*seq)];
            for (get, edit) in [("hot_get", "hot_edit"), ("cold_get", "cold_edit")] {
                if db.one::<MessageRow>(get, key.clone()).await?.is_some() {
                    db.exec(
                        edit,
                        [vec![text(body.to_string()), text(edited_at)], key.clone()].concat(),
                    )
                    .await?;
                }
            }
        }
        ConversationEffect::RecallMessage {
            conversation_id,
            seq,
            recalled_at,
            recalled_by,
        } => {
            let key = vec![text(conversation_id), big(message_bucket(*seq)), big(*seq)];
            for (get, recall) in [("hot_get", "hot_recall"), ("cold_get", "cold_recall")] {
                if db.one::<MessageRow>(get, key.clone()).await?.is_some() {
                    db.exec(
                        recall,
                        [vec![text(recalled_at), text(recalled_by)], key.clone()].concat(),
                    )
                    .await?;
                }
            }
        }
        ConversationEffect::React {
            conversation_id,
            seq,
            emoji,
            user_id,
            add,
        } => {
            let key = vec![
                text(conversation_id),
                big(message_bucket(*seq)),
                big(*seq),
                text(emoji),
                text(user_id),
            ];
            db.exec(
                if *add {
                    "reaction_put"
                } else {
                    "reaction_delete"
                },
                key,
            )
            .await?;
        }
        ConversationEffect::Block {
            user_id,
            blocked_user_id,
            blocked,
        } => {
            let key = vec![text(user_id), text(blocked_user_id)];
            db.exec(
                if *blocked {
                    "block_put"
                } else {
                    "block_delete"
                },
                key,
            )
            .await?;
        }
        ConversationEffect::Receipt {
            conversation_id,
            user_id,
            read_seq,
            delivered_seq,
        } => {
            // One writer per conversation (its partition's owner, fenced),
            // so read-then-raise needs no transaction.
            let key = vec![text(conversation_id), text(user_id)];
            let (read, delivered) = db
                .one::<(i64, i64)>("receipt", key.clone())
                .await?
                .map(|(r, d)| (r as u64, d as u64))
                .unwrap_or_default();
            let (read, delivered) = (read.max(*read_seq), delivered.max(*delivered_seq));
            db.exec(
                "receipt_put",
                [key, vec![big(read), big(delivered)]].concat(),
            )
            .await?;
        }
        ConversationEffect::RecordEvent(record) => {
            // The first record of an event wins, as in every backend.
            db.lwt(
                "idempotency_put",
                vec![
                    text(&record.source),
                    text(&record.event_id),
                    text(&record.conversation_id),
                    record.seq.map(|s| CqlValue::BigInt(s as i64)),
                    opt_text(&record.message_id),
                    text(
                        serde_json::to_string(&record.outputs)
                            .map_err(|e| StoreError::Backend(format!("outputs: {e}")))?,
                    ),
                    big(record.recorded_at_ms),
                    text(&record.fingerprint),
                ],
            )
            .await?;
        }
    }
    Ok(())
}
