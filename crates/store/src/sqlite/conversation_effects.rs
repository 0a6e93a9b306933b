//! Applying conversation effects, and the dump format every backend shares.

use super::*;

/// A message's dump line (the same for either tier and every backend).
pub fn message_line(m: &StoredMessage) -> String {
    [
        "message".to_string(),
        m.conversation_id.clone(),
        m.seq.to_string(),
        m.message_id.clone(),
        m.sender_id.clone(),
        m.source.clone(),
        m.event_id.clone(),
        m.sent_at.clone(),
        message_kind_str(m.kind),
        m.body.to_string(),
        serde_json::to_string(&m.mentions).unwrap_or_default(),
        m.edited_at.clone().unwrap_or_default(),
        m.recalled_at.clone().unwrap_or_default(),
        m.recalled_by.clone().unwrap_or_default(),
        m.reply_to.map(|seq| seq.to_string()).unwrap_or_default(),
    ]
    .join("\t")
}

pub(super) fn dump_query(
    connection: &Connection,
    query: &str,
    lines: &mut Vec<String>,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare(query)?;
    let columns = statement.column_count();
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let mut fields = Vec::with_capacity(columns);
        for index in 0..columns {
            let value: rusqlite::types::Value = row.get(index)?;
            fields.push(match value {
                rusqlite::types::Value::Null => String::new(),
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Real(r) => r.to_string(),
                rusqlite::types::Value::Text(t) => t,
                rusqlite::types::Value::Blob(b) => format!("{b:?}"),
            });
        }
        lines.push(fields.join("\t"));
    }
    Ok(())
}

pub(super) fn apply_conversation_effect(
    t: &Transaction<'_>,
    effect: &ConversationEffect,
) -> StoreResult<()> {
    match effect {
        ConversationEffect::PutConversation(record) => {
            t.run(
                "INSERT INTO conversations(conversation_id, kind, title, last_seq, diffusion, member_count, created_at, history_visibility)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(conversation_id) DO UPDATE SET kind = excluded.kind, title = excluded.title,
                   last_seq = MAX(last_seq, excluded.last_seq), diffusion = excluded.diffusion,
                   member_count = excluded.member_count, history_visibility = excluded.history_visibility",
                params![
                    record.conversation_id,
                    record.kind.as_str(),
                    record.title,
                    record.last_seq as i64,
                    record.diffusion.as_str(),
                    record.member_count as i64,
                    record.created_at,
                    record.history_visibility.as_str()
                ],
            )
            .map_err(backend)?;
        }
        ConversationEffect::AddMember {
            conversation_id,
            user_id,
            role,
            after_seq,
        } => {
            t.run(
                "INSERT INTO members(conversation_id, user_id, role, added_after_seq, removed_after_seq)
                 VALUES (?1, ?2, ?3, ?4, NULL)
                 ON CONFLICT(conversation_id, user_id, added_after_seq) DO UPDATE SET removed_after_seq = NULL, role = excluded.role",
                params![conversation_id, user_id, role.as_str(), *after_seq as i64],
            )
            .map_err(backend)?;
        }
        ConversationEffect::RemoveMember {
            conversation_id,
            user_id,
            after_seq,
        } => {
            t.run(
                "UPDATE members SET removed_after_seq = ?3
                 WHERE conversation_id = ?1 AND user_id = ?2 AND removed_after_seq IS NULL",
                params![conversation_id, user_id, *after_seq as i64],
            )
            .map_err(backend)?;
        }
        ConversationEffect::InsertMessage(message) => {
            // The (conversation_id, seq) primary key is the fence against a
            // second message taking the same seq; inserting the very same
            // message again is a no-op.
            let mut existing: Option<String> = t
                .row(
                    "SELECT message_id FROM messages WHERE conversation_id = ?1 AND seq = ?2",
                    params![message.conversation_id, message.seq as i64],
                    |row| row.get(0),
                )
                .optional()
                .map_err(backend)?;
            if existing.is_none() {
                existing = cold::cold_message(t, &message.conversation_id, message.seq)?
                    .map(|m| m.message_id);
            }
            match existing {
                Some(id) if id == message.message_id => {}
                Some(_) => {
                    return Err(StoreError::SeqConflict {
                        conversation_id: message.conversation_id.clone(),
                        seq: message.seq,
                    })
                }
                None => {
                    t.run(
                        &format!("INSERT INTO messages({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
                        params![
                            message.conversation_id,
                            message.seq as i64,
                            message.message_id,
                            message.sender_id,
                            message.source,
                            message.event_id,
                            message.sent_at,
                            message_kind_str(message.kind),
                            message.body.to_string(),
                            serde_json::to_string(&message.mentions).map_err(json_error)?,
                            message.edited_at,
                            message.recalled_at,
                            message.recalled_by,
                            message.reply_to.map(|seq| seq as i64)
                        ],
                    )
                    .map_err(backend)?;
                }
            }
        }
        ConversationEffect::EditMessage {
            conversation_id,
            seq,
            body,
            edited_at,
        } => {
            let changed = t
                .run(
                    "UPDATE messages SET body = ?3, edited_at = ?4 WHERE conversation_id = ?1 AND seq = ?2",
                    params![conversation_id, *seq as i64, body.to_string(), edited_at],
                )
                .map_err(backend)?;
            if changed == 0 {
                cold::update_cold(t, conversation_id, *seq, |m| {
                    m.body = body.clone();
                    m.edited_at = Some(edited_at.clone());
                })?;
            }
        }
        ConversationEffect::RecallMessage {
            conversation_id,
            seq,
            recalled_at,
            recalled_by,
        } => {
            let changed = t
                .run(
                    "UPDATE messages SET recalled_at = ?3, recalled_by = ?4, body = '{}' WHERE conversation_id = ?1 AND seq = ?2",
                    params![conversation_id, *seq as i64, recalled_at, recalled_by],
                )
                .map_err(backend)?;
            if changed == 0 {
                cold::update_cold(t, conversation_id, *seq, |m| {
                    m.body = serde_json::json!({});
                    m.recalled_at = Some(recalled_at.clone());
                    m.recalled_by = Some(recalled_by.clone());
                })?;
            }
        }
        ConversationEffect::React {
            conversation_id,
            seq,
            emoji,
            user_id,
            add,
        } => {
            let sql = if *add {
                "INSERT INTO reactions(conversation_id, seq, emoji, user_id) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM reactions WHERE conversation_id = ?1 AND seq = ?2 AND emoji = ?3 AND user_id = ?4"
            };
            t.run(sql, params![conversation_id, *seq as i64, emoji, user_id])
                .map_err(backend)?;
        }
        ConversationEffect::Block {
            user_id,
            blocked_user_id,
            blocked,
        } => {
            let sql = if *blocked {
                "INSERT INTO blocks(user_id, blocked_user_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM blocks WHERE user_id = ?1 AND blocked_user_id = ?2"
            };
            t.run(sql, params![user_id, blocked_user_id])
                .map_err(backend)?;
        }
        ConversationEffect::Receipt {
            conversation_id,
            user_id,
            read_seq,
            delivered_seq,
        } => {
            t.run(
                "INSERT INTO receipts(conversation_id, user_id, read_seq, delivered_seq) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(conversation_id, user_id) DO UPDATE SET
                   read_seq = MAX(read_seq, excluded.read_seq), delivered_seq = MAX(delivered_seq, excluded.delivered_seq)",
                params![conversation_id, user_id, *read_seq as i64, *delivered_seq as i64],
            )
            .map_err(backend)?;
        }
        ConversationEffect::RecordEvent(record) => {
            t.run(
                "INSERT INTO idempotency(source, event_id, conversation_id, seq, message_id, outputs, recorded_at_ms, fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(source, event_id) DO NOTHING",
                params![
                    record.source,
                    record.event_id,
                    record.conversation_id,
                    record.seq.map(|s| s as i64),
                    record.message_id,
                    serde_json::to_string(&record.outputs).map_err(json_error)?,
                    record.recorded_at_ms,
                    record.fingerprint
                ],
            )
            .map_err(backend)?;
        }
    }
    Ok(())
}
