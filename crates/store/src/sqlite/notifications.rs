//! The `offline` function's file: coalescing state, outbox and log.

use std::path::Path;

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::Value;

use super::{backend, check_fence, dump_query, Cached, Db, Durability, FENCE_TABLE};
use crate::{
    Fence, NotificationRecord, NotificationStatus, NotificationStore, NotifyEffect, NotifyState,
    StoreError, StoreResult,
};

const NOTIFY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notify_state(
  user_id TEXT NOT NULL, conversation_id TEXT NOT NULL, partition INTEGER NOT NULL,
  counted_seq INTEGER NOT NULL, pending INTEGER NOT NULL, first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL, mentioned INTEGER NOT NULL, due_ms INTEGER NOT NULL, last_message TEXT,
  PRIMARY KEY(user_id, conversation_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notify_state_due ON notify_state(partition, due_ms) WHERE pending > 0;
CREATE TABLE IF NOT EXISTS notifications(
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT NOT NULL, provider TEXT NOT NULL,
  partition INTEGER NOT NULL, conversation_id TEXT NOT NULL, payload TEXT NOT NULL,
  status TEXT NOT NULL, attempts INTEGER NOT NULL, next_attempt_ms INTEGER NOT NULL,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, answer TEXT);
CREATE INDEX IF NOT EXISTS notifications_ready ON notifications(partition, next_attempt_ms) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS notifications_user ON notifications(user_id, created_ms);
CREATE INDEX IF NOT EXISTS notifications_created ON notifications(created_ms);
";

/// The file of the offline function in a data directory.
pub const NOTIFICATIONS_FILE: &str = "offline.db";

/// Changes to `offline.db` since its first release (see `Migrations`).
const NOTIFICATION_MIGRATIONS: super::Migrations = &[];

pub struct SqliteNotificationStore {
    db: Db,
}

impl SqliteNotificationStore {
    pub fn open_writer(path: &Path, durability: Durability) -> StoreResult<Self> {
        let schema = format!("{NOTIFY_SCHEMA}{FENCE_TABLE}");
        Ok(SqliteNotificationStore {
            db: Db::open(path, &schema, NOTIFICATION_MIGRATIONS, true, durability)?,
        })
    }

    pub fn open_reader(path: &Path) -> StoreResult<Self> {
        let schema = format!("{NOTIFY_SCHEMA}{FENCE_TABLE}");
        Ok(SqliteNotificationStore {
            db: Db::open(
                path,
                &schema,
                NOTIFICATION_MIGRATIONS,
                false,
                Durability::Full,
            )?,
        })
    }
}

/// The notification store of `data_dir`: writable by its owner (offline),
/// read-only for everyone else (gateway, imctl).
pub fn notifications_in(
    data_dir: &Path,
    owner: Option<Durability>,
) -> StoreResult<SqliteNotificationStore> {
    let path = data_dir.join(NOTIFICATIONS_FILE);
    match owner {
        Some(durability) => SqliteNotificationStore::open_writer(&path, durability),
        None => SqliteNotificationStore::open_reader(&path),
    }
    .map_err(super::opening(&path))
}

const STATE_COLUMNS: &str = "user_id, conversation_id, partition, counted_seq, pending, first_seq, last_seq, mentioned, due_ms, last_message";
const RECORD_COLUMNS: &str = "id, user_id, device_id, provider, partition, conversation_id, payload, status, attempts, next_attempt_ms, created_ms, updated_ms, answer";

fn state_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NotifyState> {
    let last_message: Option<String> = row.get(9)?;
    Ok(NotifyState {
        user_id: row.get(0)?,
        conversation_id: row.get(1)?,
        partition: row.get(2)?,
        counted_seq: row.get::<_, i64>(3)? as u64,
        pending: row.get::<_, i64>(4)? as u64,
        first_seq: row.get::<_, i64>(5)? as u64,
        last_seq: row.get::<_, i64>(6)? as u64,
        mentioned: row.get::<_, i64>(7)? != 0,
        due_ms: row.get(8)?,
        last_message: crate::parse_last_message(last_message.as_deref()).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, error.into())
        })?,
    })
}

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NotificationRecord> {
    let payload: String = row.get(6)?;
    let status: String = row.get(7)?;
    Ok(NotificationRecord {
        id: row.get(0)?,
        user_id: row.get(1)?,
        device_id: row.get(2)?,
        provider: row.get(3)?,
        partition: row.get(4)?,
        conversation_id: row.get(5)?,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        status: super::parse_kind(status, NotificationStatus::parse)?,
        attempts: row.get(8)?,
        next_attempt_ms: row.get(9)?,
        created_ms: row.get(10)?,
        updated_ms: row.get(11)?,
        answer: row.get(12)?,
    })
}

impl NotificationStore for SqliteNotificationStore {
    fn notify_state(
        &self,
        user_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<NotifyState>> {
        self.db.read(|c| {
            c.row(
                &format!("SELECT {STATE_COLUMNS} FROM notify_state WHERE user_id = ?1 AND conversation_id = ?2"),
                params![user_id, conversation_id],
                state_from_row,
            )
            .optional()
        })
    }

    fn due_states(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<NotifyState>> {
        self.db.read(|c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT {STATE_COLUMNS} FROM notify_state WHERE partition = ?1 AND pending > 0 AND due_ms <= ?2
                 ORDER BY due_ms"
            ))?;
            // In index order: `take` stops early. (A `LIMIT ?` would make
            // the bundled SQLite re-prepare the statement on every call.)
            let rows = statement.query_map(params![partition, now_ms], state_from_row)?;
            rows.take(limit).collect()
        })
    }

    fn ready_notifications(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<NotificationRecord>> {
        self.db.read(|c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM notifications WHERE partition = ?1 AND status = 'queued'
                 AND next_attempt_ms <= ?2 ORDER BY next_attempt_ms, id"
            ))?;
            // Sorted, then the first `limit` (no `LIMIT ?`, see above).
            let rows = statement.query_map(params![partition, now_ms], record_from_row)?;
            rows.take(limit).collect()
        })
    }

    fn next_wakeup_ms(&self, partition: u32) -> StoreResult<Option<i64>> {
        self.db.read(|c| {
            c.row(
                "SELECT MIN(t) FROM (
                   SELECT MIN(due_ms) AS t FROM notify_state WHERE partition = ?1 AND pending > 0
                   UNION ALL
                   SELECT MIN(next_attempt_ms) FROM notifications WHERE partition = ?1 AND status = 'queued')",
                params![partition],
                |row| row.get::<_, Option<i64>>(0),
            )
        })
    }

    fn notification(&self, id: &str) -> StoreResult<Option<NotificationRecord>> {
        self.db.read(|c| {
            c.row(
                &format!("SELECT {RECORD_COLUMNS} FROM notifications WHERE id = ?1"),
                params![id],
                record_from_row,
            )
            .optional()
        })
    }

    fn notification_log(
        &self,
        user_id: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationRecord>> {
        self.db.read(|c| match user_id {
            Some(user) => {
                let mut statement = c.prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM notifications WHERE user_id = ?1
                     ORDER BY created_ms DESC, id DESC LIMIT {limit}"
                ))?;
                let rows = statement.query_map(params![user], record_from_row)?;
                rows.collect()
            }
            None => {
                let mut statement = c.prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM notifications ORDER BY created_ms DESC, id DESC LIMIT {limit}"
                ))?;
                let rows = statement.query_map([], record_from_row)?;
                rows.collect()
            }
        })
    }

    fn apply(&self, fence: &Fence, effects: &[NotifyEffect]) -> StoreResult<()> {
        let (fence, effects) = (fence.clone(), effects.to_vec());
        self.db.apply_grouped(move |t| {
            check_fence(t, &fence)?;
            for effect in &effects {
                apply_notify_effect(t, effect)?;
            }
            Ok(())
        })
    }

    fn dump(&self) -> StoreResult<Vec<String>> {
        self.db.read(|c| {
            let mut lines = Vec::new();
            let queries = [
                "SELECT 'notify_state', user_id, conversation_id, partition, counted_seq, pending, first_seq, last_seq, mentioned, due_ms, IFNULL(last_message,'') FROM notify_state ORDER BY user_id, conversation_id",
                "SELECT 'notification', id, user_id, device_id, provider, conversation_id, payload, status FROM notifications ORDER BY id",
            ];
            for query in queries {
                dump_query(c, query, &mut lines)?;
            }
            Ok(lines)
        })
    }
}

fn apply_notify_effect(t: &Transaction<'_>, effect: &NotifyEffect) -> StoreResult<()> {
    match effect {
        NotifyEffect::PutState(state) => {
            t.run(
                &format!(
                    "INSERT INTO notify_state({STATE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT(user_id, conversation_id) DO UPDATE SET partition = excluded.partition,
                       counted_seq = excluded.counted_seq, pending = excluded.pending, first_seq = excluded.first_seq,
                       last_seq = excluded.last_seq, mentioned = excluded.mentioned, due_ms = excluded.due_ms,
                       last_message = excluded.last_message"
                ),
                params![
                    state.user_id,
                    state.conversation_id,
                    state.partition,
                    state.counted_seq as i64,
                    state.pending as i64,
                    state.first_seq as i64,
                    state.last_seq as i64,
                    state.mentioned as i64,
                    state.due_ms,
                    state
                        .last_message
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .map_err(super::json_error)?,
                ],
            )
            .map_err(backend)?;
        }
        NotifyEffect::Enqueue(record) => {
            t.run(
                &format!(
                    "INSERT INTO notifications({RECORD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                     ON CONFLICT(id) DO NOTHING"
                ),
                params![
                    record.id,
                    record.user_id,
                    record.device_id,
                    record.provider,
                    record.partition,
                    record.conversation_id,
                    record.payload.to_string(),
                    record.status.as_str(),
                    record.attempts,
                    record.next_attempt_ms,
                    record.created_ms,
                    record.updated_ms,
                    record.answer,
                ],
            )
            .map_err(backend)?;
        }
        NotifyEffect::Settle {
            id,
            status,
            attempts,
            next_attempt_ms,
            answer,
            updated_ms,
        } => {
            let changed = t
                .run(
                    "UPDATE notifications SET status = ?2, attempts = ?3, next_attempt_ms = ?4, answer = ?5, updated_ms = ?6
                     WHERE id = ?1",
                    params![id, status.as_str(), attempts, next_attempt_ms, answer, updated_ms],
                )
                .map_err(backend)?;
            if changed == 0 {
                return Err(StoreError::Backend(format!(
                    "notification {id} is not in the outbox"
                )));
            }
        }
    }
    Ok(())
}
