//! The cold tier of the conversation store: runs of consecutive messages of
//! one conversation, serialized and zstd-compressed into one row each
//! (`cold_segments`), in the same file as the hot `messages` table so that a
//! move (insert the segment, delete the hot rows) is one transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::{backend, json_error, message_from_row, Cached, MESSAGE_COLUMNS};
use crate::{StoreError, StoreResult, StoredMessage, TieringPolicy};

pub(super) const COLD_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cold_segments(
  conversation_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
  count INTEGER NOT NULL, newest_sent_at TEXT NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY(conversation_id, first_seq)) WITHOUT ROWID;
";

/// zstd level for segments: archiving is off the hot path, so trade CPU
/// for size.
const LEVEL: i32 = 9;

pub(super) fn encode(messages: &[StoredMessage]) -> StoreResult<Vec<u8>> {
    let json = serde_json::to_vec(messages).map_err(json_error)?;
    zstd::bulk::compress(&json, LEVEL)
        .map_err(|error| StoreError::Backend(format!("compress segment: {error}")))
}

pub(super) fn decode(data: &[u8]) -> StoreResult<Vec<StoredMessage>> {
    let json = zstd::stream::decode_all(data)
        .map_err(|error| StoreError::Backend(format!("decompress segment: {error}")))?;
    serde_json::from_slice(&json).map_err(json_error)
}

/// The segment holding `seq`, if any: (first_seq, messages).
pub(super) fn segment_with(
    c: &Connection,
    conversation_id: &str,
    seq: u64,
) -> StoreResult<Option<(i64, Vec<StoredMessage>)>> {
    let row: Option<(i64, Vec<u8>)> = c
        .row(
            "SELECT first_seq, data FROM cold_segments
             WHERE conversation_id = ?1 AND first_seq <= ?2 AND last_seq >= ?2",
            params![conversation_id, seq as i64],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(backend)?;
    row.map(|(first, data)| Ok((first, decode(&data)?)))
        .transpose()
}

pub(super) fn cold_message(
    c: &Connection,
    conversation_id: &str,
    seq: u64,
) -> StoreResult<Option<StoredMessage>> {
    Ok(segment_with(c, conversation_id, seq)?
        .and_then(|(_, messages)| messages.into_iter().find(|m| m.seq == seq)))
}

/// Up to `limit` cold messages with seq < `below`, newest first.
pub(super) fn cold_before(
    c: &Connection,
    conversation_id: &str,
    below: u64,
    limit: usize,
) -> StoreResult<Vec<StoredMessage>> {
    let mut out = Vec::new();
    let mut statement = c
        .prepare_cached(
            "SELECT data FROM cold_segments WHERE conversation_id = ?1 AND first_seq < ?2
             ORDER BY first_seq DESC",
        )
        .map_err(backend)?;
    let mut rows = statement
        .query(params![conversation_id, below.min(i64::MAX as u64) as i64])
        .map_err(backend)?;
    while out.len() < limit {
        let Some(row) = rows.next().map_err(backend)? else {
            break;
        };
        let data: Vec<u8> = row.get(0).map_err(backend)?;
        let mut messages = decode(&data)?;
        messages.retain(|m| m.seq < below);
        messages.reverse();
        out.extend(messages.into_iter().take(limit - out.len()));
    }
    Ok(out)
}

/// Rewrite the cold copy of one message (an edit or recall of an archived
/// message). Returns whether a segment held it.
pub(super) fn update_cold(
    c: &Connection,
    conversation_id: &str,
    seq: u64,
    change: impl FnOnce(&mut StoredMessage),
) -> StoreResult<bool> {
    let Some((first, mut messages)) = segment_with(c, conversation_id, seq)? else {
        return Ok(false);
    };
    let Some(message) = messages.iter_mut().find(|m| m.seq == seq) else {
        return Ok(false);
    };
    change(message);
    c.run(
        "UPDATE cold_segments SET data = ?3 WHERE conversation_id = ?1 AND first_seq = ?2",
        params![conversation_id, first, encode(&messages)?],
    )
    .map_err(backend)?;
    Ok(true)
}

/// Every cold message, in (conversation, seq) order.
pub(super) fn all_cold(c: &Connection) -> StoreResult<Vec<StoredMessage>> {
    let mut statement = c
        .prepare("SELECT data FROM cold_segments ORDER BY conversation_id, first_seq")
        .map_err(backend)?;
    let mut rows = statement.query([]).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        let data: Vec<u8> = row.get(0).map_err(backend)?;
        out.extend(decode(&data)?);
    }
    Ok(out)
}

/// Move one segment's worth of `conversation_id`'s oldest hot messages sent
/// before `cutoff` (RFC 3339, so text order is time order) into the cold
/// tier. Runs inside the caller's write transaction. Returns how many moved.
pub(super) fn move_segment(
    c: &Connection,
    conversation_id: &str,
    cutoff: &str,
    policy: &TieringPolicy,
) -> StoreResult<usize> {
    let mut statement = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 ORDER BY seq"
        ))
        .map_err(backend)?;
    // In key order: `take` stops early (no `LIMIT ?`: see `history`).
    let oldest = statement
        .query_map(params![conversation_id], message_from_row)
        .map_err(backend)?
        .take(policy.segment_messages.max(1))
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    let segment: Vec<StoredMessage> = oldest
        .into_iter()
        .take_while(|m| m.sent_at.as_str() < cutoff)
        .collect();
    let (Some(first), Some(last)) = (segment.first(), segment.last()) else {
        return Ok(0);
    };
    let newest_sent_at = segment
        .iter()
        .map(|m| m.sent_at.as_str())
        .max()
        .unwrap_or_default()
        .to_string();
    c.run(
        "INSERT INTO cold_segments(conversation_id, first_seq, last_seq, count, newest_sent_at, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            conversation_id,
            first.seq as i64,
            last.seq as i64,
            segment.len() as i64,
            newest_sent_at,
            encode(&segment)?
        ],
    )
    .map_err(backend)?;
    c.run(
        "DELETE FROM messages WHERE conversation_id = ?1 AND seq BETWEEN ?2 AND ?3",
        params![conversation_id, first.seq as i64, last.seq as i64],
    )
    .map_err(backend)?;
    Ok(segment.len())
}

/// Delete what retention no longer keeps: hot rows and whole cold segments
/// older than `before` (RFC 3339). Returns how many messages went.
pub(super) fn expire(c: &Connection, conversation_id: &str, before: &str) -> StoreResult<u64> {
    let cold: i64 = c
        .row(
            "SELECT IFNULL(SUM(count), 0) FROM cold_segments WHERE conversation_id = ?1 AND newest_sent_at < ?2",
            params![conversation_id, before],
            |row| row.get(0),
        )
        .map_err(backend)?;
    c.run(
        "DELETE FROM cold_segments WHERE conversation_id = ?1 AND newest_sent_at < ?2",
        params![conversation_id, before],
    )
    .map_err(backend)?;
    let hot = c
        .run(
            "DELETE FROM messages WHERE conversation_id = ?1 AND sent_at < ?2",
            params![conversation_id, before],
        )
        .map_err(backend)?;
    Ok(cold as u64 + hot as u64)
}
