//! The user store: per-user conversation rows and the sync log.

use super::*;

pub(super) const USER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS user_conversations(
  user_id TEXT NOT NULL, conversation_id TEXT NOT NULL, last_seq INTEGER NOT NULL, read_seq INTEGER NOT NULL,
  joined_seq INTEGER NOT NULL, diffusion TEXT NOT NULL, muted_until_ms INTEGER, last_message TEXT,
  PRIMARY KEY(user_id, conversation_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_sync(
  n INTEGER PRIMARY KEY, user_id TEXT NOT NULL, sync_seq INTEGER NOT NULL, event_key TEXT NOT NULL,
  item TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS user_sync_key ON user_sync(user_id, sync_seq);
CREATE TABLE IF NOT EXISTS user_effects(
  user_id TEXT NOT NULL, event_key TEXT NOT NULL, PRIMARY KEY(user_id, event_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_sync_floor(
  user_id TEXT NOT NULL PRIMARY KEY, floor INTEGER NOT NULL) WITHOUT ROWID;
";

/// Changes to `unread.db` since its first release (see [`Migrations`]).
pub(super) const USER_MIGRATIONS: Migrations = &[
    // v1: sync items are appended to the end of one table and found by a
    // small index, instead of stored in it by (user, sync_seq). Each user's
    // newest items were a page in the middle of the table, and a commit
    // wrote (and split) one for every user of its batch: 2.1 WAL frames
    // per delivery, 0.9 now (40 users, 40 messages per commit, 400-byte
    // items; docs/BENCHMARKS.md). The rows are copied once.
    "CREATE TABLE IF NOT EXISTS user_sync(
       user_id TEXT NOT NULL, sync_seq INTEGER NOT NULL, event_key TEXT NOT NULL, item TEXT NOT NULL,
       PRIMARY KEY(user_id, sync_seq)) WITHOUT ROWID;
     CREATE TABLE user_sync_v1(
       n INTEGER PRIMARY KEY, user_id TEXT NOT NULL, sync_seq INTEGER NOT NULL, event_key TEXT NOT NULL,
       item TEXT NOT NULL);
     INSERT INTO user_sync_v1(user_id, sync_seq, event_key, item)
       SELECT user_id, sync_seq, event_key, item FROM user_sync ORDER BY user_id, sync_seq;
     DROP TABLE user_sync;
     ALTER TABLE user_sync_v1 RENAME TO user_sync;
     CREATE UNIQUE INDEX IF NOT EXISTS user_sync_key ON user_sync(user_id, sync_seq)",
];

pub struct SqliteUserStore {
    db: Db,
}

impl SqliteUserStore {
    pub fn open_writer(path: &Path, durability: Durability) -> StoreResult<Self> {
        let schema = format!("{USER_SCHEMA}{FENCE_TABLE}");
        Ok(SqliteUserStore {
            db: Db::open(path, &schema, USER_MIGRATIONS, true, durability)?,
        })
    }

    pub fn open_reader(path: &Path) -> StoreResult<Self> {
        let schema = format!("{USER_SCHEMA}{FENCE_TABLE}");
        Ok(SqliteUserStore {
            db: Db::open(path, &schema, USER_MIGRATIONS, false, Durability::Full)?,
        })
    }
}

pub(super) const USER_CONVERSATION_COLUMNS: &str =
    "user_id, conversation_id, last_seq, read_seq, joined_seq, diffusion, muted_until_ms, last_message";

pub(super) fn user_conversation_from_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<UserConversation> {
    let last_message: Option<String> = row.get(7)?;
    Ok(UserConversation {
        user_id: row.get(0)?,
        conversation_id: row.get(1)?,
        last_seq: row.get::<_, i64>(2)? as u64,
        read_seq: row.get::<_, i64>(3)? as u64,
        joined_seq: row.get::<_, i64>(4)? as u64,
        diffusion: parse_kind(row.get(5)?, Diffusion::parse)?,
        muted_until_ms: row.get(6)?,
        last_message: crate::parse_last_message(last_message.as_deref()).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, error.into())
        })?,
    })
}

impl UserStore for SqliteUserStore {
    fn user_conversation(
        &self,
        user_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<UserConversation>> {
        self.db.read(|c| {
            c.row(
                &format!("SELECT {USER_CONVERSATION_COLUMNS} FROM user_conversations WHERE user_id = ?1 AND conversation_id = ?2"),
                params![user_id, conversation_id],
                user_conversation_from_row,
            )
            .optional()
        })
    }

    fn user_conversations(&self, user_id: &str) -> StoreResult<Vec<UserConversation>> {
        self.db.read(|c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT {USER_CONVERSATION_COLUMNS} FROM user_conversations WHERE user_id = ?1 ORDER BY conversation_id"
            ))?;
            let rows = statement.query_map(params![user_id], user_conversation_from_row)?;
            rows.collect()
        })
    }

    fn user_conversation_counts(&self, user_id: &str) -> StoreResult<Vec<UserConversation>> {
        self.db.read(|c| {
            let mut statement = c.prepare_cached(
                "SELECT user_id, conversation_id, last_seq, read_seq, joined_seq, diffusion, muted_until_ms, NULL
                 FROM user_conversations WHERE user_id = ?1 ORDER BY conversation_id",
            )?;
            let rows = statement.query_map(params![user_id], user_conversation_from_row)?;
            rows.collect()
        })
    }

    fn last_sync_seq(&self, user_id: &str) -> StoreResult<u64> {
        self.db.read(|c| {
            c.row(
                "SELECT MAX(IFNULL((SELECT MAX(sync_seq) FROM user_sync WHERE user_id = ?1), 0),
                            IFNULL((SELECT floor FROM user_sync_floor WHERE user_id = ?1), 0))",
                params![user_id],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    fn effect_applied(&self, user_id: &str, key: &str) -> StoreResult<bool> {
        self.db.read(|c| {
            c.row(
                "SELECT 1 FROM user_effects WHERE user_id = ?1 AND event_key = ?2",
                params![user_id, key],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
        })
    }

    fn sync_items(&self, user_id: &str, after: u64, limit: usize) -> StoreResult<Vec<SyncRecord>> {
        self.db.read(|c| {
            let mut statement = c.prepare_cached(
                "SELECT user_id, sync_seq, event_key, item FROM user_sync WHERE user_id = ?1 AND sync_seq > ?2
                 ORDER BY sync_seq",
            )?;
            // In key order: `take` stops early (see `history` on `LIMIT ?`).
            let rows = statement.query_map(params![user_id, after as i64], |row| {
                let item: String = row.get(3)?;
                Ok(SyncRecord {
                    user_id: row.get(0)?,
                    sync_seq: row.get::<_, i64>(1)? as u64,
                    event_key: row.get(2)?,
                    item: serde_json::from_str(&item).map_err(|error| {
                        rusqlite::Error::FromSqlConversionFailure(
                            3,
                            rusqlite::types::Type::Text,
                            format!("sync item of {user_id} is unreadable ({error}): the log was written by another version; rebuild it with `imctl replay`").into(),
                        )
                    })?,
                })
            })?;
            rows.take(limit).collect()
        })
    }

    fn compact_sync(&self, user_id: &str, through: u64) -> StoreResult<u64> {
        self.db.write(|t| {
            let floor: i64 = t
                .query_row(
                    "SELECT IFNULL(MAX(floor), 0) FROM user_sync_floor WHERE user_id = ?1",
                    params![user_id],
                    |row| row.get(0),
                )
                .map_err(backend)?;
            let floor = floor.max(through as i64);
            t.execute(
                "INSERT INTO user_sync_floor(user_id, floor) VALUES (?1, ?2)
                 ON CONFLICT(user_id) DO UPDATE SET floor = excluded.floor",
                params![user_id, floor],
            )
            .map_err(backend)?;
            // The applied-event markers of the compacted items go with
            // them: their events are long acked (a redelivery is bounded by
            // the consumer's ack window, far fewer than the items kept).
            t.execute(
                "DELETE FROM user_effects WHERE user_id = ?1 AND event_key IN
                   (SELECT event_key FROM user_sync WHERE user_id = ?1 AND sync_seq <= ?2)",
                params![user_id, floor],
            )
            .map_err(backend)?;
            t.execute(
                "DELETE FROM user_sync WHERE user_id = ?1 AND sync_seq <= ?2",
                params![user_id, floor],
            )
            .map_err(backend)?;
            Ok(floor as u64)
        })
    }

    fn sync_floor(&self, user_id: &str) -> StoreResult<u64> {
        self.db.read(|c| {
            c.row(
                "SELECT IFNULL(MAX(floor), 0) FROM user_sync_floor WHERE user_id = ?1",
                params![user_id],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    fn apply(&self, fence: &Fence, effects: &[UserEffect]) -> StoreResult<()> {
        let (fence, effects) = (fence.clone(), effects.to_vec());
        self.db.apply_grouped(move |t| {
            check_fence(t, &fence)?;
            for effect in &effects {
                apply_user_effect(t, effect)?;
            }
            Ok(())
        })
    }

    fn dump(&self) -> StoreResult<Vec<String>> {
        self.db.read(|c| {
            let mut lines = Vec::new();
            let queries = [
                "SELECT 'user_conversation', user_id, conversation_id, last_seq, read_seq, joined_seq, diffusion, IFNULL(muted_until_ms,-1), IFNULL(last_message,'') FROM user_conversations ORDER BY user_id, conversation_id",
                "SELECT 'sync_item', user_id, event_key, item FROM user_sync ORDER BY user_id, event_key",
                "SELECT 'sync_head', user_id, MAX(sync_seq), COUNT(*) FROM user_sync GROUP BY user_id ORDER BY user_id",
                "SELECT 'effect', user_id, event_key FROM user_effects ORDER BY user_id, event_key",
            ];
            for query in queries {
                dump_query(c, query, &mut lines)?;
            }
            Ok(lines)
        })
    }
}

pub(super) fn apply_user_effect(t: &Transaction<'_>, effect: &UserEffect) -> StoreResult<()> {
    match effect {
        UserEffect::PutUserConversation(row) => {
            t.run(
                &format!(
                    "INSERT INTO user_conversations({USER_CONVERSATION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(user_id, conversation_id) DO UPDATE SET last_seq = excluded.last_seq,
                       read_seq = excluded.read_seq, joined_seq = excluded.joined_seq, diffusion = excluded.diffusion,
                       muted_until_ms = excluded.muted_until_ms, last_message = excluded.last_message"
                ),
                params![
                    row.user_id,
                    row.conversation_id,
                    row.last_seq as i64,
                    row.read_seq as i64,
                    row.joined_seq as i64,
                    row.diffusion.as_str(),
                    row.muted_until_ms,
                    row.last_message
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .map_err(json_error)?
                ],
            )
            .map_err(backend)?;
        }
        UserEffect::DeleteUserConversation {
            user_id,
            conversation_id,
        } => {
            t.run(
                "DELETE FROM user_conversations WHERE user_id = ?1 AND conversation_id = ?2",
                params![user_id, conversation_id],
            )
            .map_err(backend)?;
        }
        UserEffect::AppendSync(record) => {
            t.run(
                "INSERT INTO user_sync(user_id, sync_seq, event_key, item) VALUES (?1, ?2, ?3, ?4)",
                params![
                    record.user_id,
                    record.sync_seq as i64,
                    record.event_key,
                    serde_json::to_string(&record.item).map_err(json_error)?
                ],
            )
            .map_err(|error| match error {
                rusqlite::Error::SqliteFailure(ref code, _)
                    if code.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::SeqConflict {
                        conversation_id: format!("user:{}", record.user_id),
                        seq: record.sync_seq,
                    }
                }
                other => backend(other),
            })?;
        }
        UserEffect::MarkApplied { user_id, key } => {
            t.run(
                "INSERT INTO user_effects(user_id, event_key) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![user_id, key],
            )
            .map_err(backend)?;
        }
    }
    Ok(())
}
