//! The conversation store: messages, members, receipts, reactions, blocks.

use super::*;

pub(super) const CONVERSATION_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations(
  conversation_id TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT, last_seq INTEGER NOT NULL,
  diffusion TEXT NOT NULL, member_count INTEGER NOT NULL, created_at TEXT NOT NULL,
  history_visibility TEXT NOT NULL DEFAULT 'joined') WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members(
  conversation_id TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL,
  added_after_seq INTEGER NOT NULL, removed_after_seq INTEGER,
  PRIMARY KEY(conversation_id, user_id, added_after_seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_current ON members(conversation_id, user_id) WHERE removed_after_seq IS NULL;
CREATE TABLE IF NOT EXISTS messages(
  conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL,
  sender_id TEXT NOT NULL, source TEXT NOT NULL, event_id TEXT NOT NULL, sent_at TEXT NOT NULL,
  kind TEXT NOT NULL, body TEXT NOT NULL, mentions TEXT NOT NULL,
  edited_at TEXT, recalled_at TEXT, recalled_by TEXT, reply_to INTEGER,
  PRIMARY KEY(conversation_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactions(
  conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, emoji TEXT NOT NULL, user_id TEXT NOT NULL,
  PRIMARY KEY(conversation_id, seq, emoji, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks(
  user_id TEXT NOT NULL, blocked_user_id TEXT NOT NULL,
  PRIMARY KEY(user_id, blocked_user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts(
  conversation_id TEXT NOT NULL, user_id TEXT NOT NULL,
  read_seq INTEGER NOT NULL, delivered_seq INTEGER NOT NULL,
  PRIMARY KEY(conversation_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency(
  source TEXT NOT NULL, event_id TEXT NOT NULL, conversation_id TEXT NOT NULL, seq INTEGER,
  message_id TEXT, outputs TEXT NOT NULL, recorded_at_ms INTEGER NOT NULL,
  fingerprint TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(source, event_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency(recorded_at_ms);
";

/// Changes to `dedupe.db` since its first release (see [`Migrations`]).
pub(super) const CONVERSATION_MIGRATIONS: Migrations = &[
    // v1: idempotency records remember what event they are, so a reused
    // (source, id) with other contents is refused as a conflict.
    "ALTER TABLE idempotency ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''",
    // v2: what members added later may read. Conversations made before it
    // get `joined`, the default of the event that made them, so a replay of
    // their events rebuilds the same rows.
    "ALTER TABLE conversations ADD COLUMN history_visibility TEXT NOT NULL DEFAULT 'joined'",
    // v3: keys are purged by age, so find them by age.
    "CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency(recorded_at_ms)",
    // v4: replies (older messages answer nothing). The tables of
    // reactions, blocks and receipts come from the current schema, applied
    // after the steps; they start empty, as the events that fill them did
    // not exist before.
    "ALTER TABLE messages ADD COLUMN reply_to INTEGER",
    // v5: message ids are no longer held unique. The index cost a write to
    // a random page for every message (a third of dedupe's WAL frames), and
    // refused a repeat whose idempotency key had been purged, which the
    // README promises is applied as new: the partition stopped on it. A
    // table's UNIQUE constraint cannot be dropped in SQLite, so the table
    // is copied (a file without one gets it from the first statement).
    "CREATE TABLE IF NOT EXISTS messages(
       conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL,
       sender_id TEXT NOT NULL, source TEXT NOT NULL, event_id TEXT NOT NULL, sent_at TEXT NOT NULL,
       kind TEXT NOT NULL, body TEXT NOT NULL, mentions TEXT NOT NULL,
       edited_at TEXT, recalled_at TEXT, recalled_by TEXT, reply_to INTEGER,
       PRIMARY KEY(conversation_id, seq)) WITHOUT ROWID;
     CREATE TABLE messages_v5(
       conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL,
       sender_id TEXT NOT NULL, source TEXT NOT NULL, event_id TEXT NOT NULL, sent_at TEXT NOT NULL,
       kind TEXT NOT NULL, body TEXT NOT NULL, mentions TEXT NOT NULL,
       edited_at TEXT, recalled_at TEXT, recalled_by TEXT, reply_to INTEGER,
       PRIMARY KEY(conversation_id, seq)) WITHOUT ROWID;
     INSERT INTO messages_v5(conversation_id, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to)
       SELECT conversation_id, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to FROM messages;
     DROP TABLE messages;
     ALTER TABLE messages_v5 RENAME TO messages",
];

pub struct SqliteConversationStore {
    db: Db,
}

impl SqliteConversationStore {
    /// How many fsyncs [`ConversationStore::sync`] has made
    /// ([`Durability::Deferred`]; also `im_store_deferred_syncs_total`).
    pub fn deferred_syncs(&self) -> u64 {
        self.db.fsyncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Open for writing (the owning function).
    pub fn open_writer(path: &Path, durability: Durability) -> StoreResult<Self> {
        let schema = format!("{CONVERSATION_SCHEMA}{}{FENCE_TABLE}", cold::COLD_SCHEMA);
        Ok(SqliteConversationStore {
            db: Db::open(path, &schema, CONVERSATION_MIGRATIONS, true, durability)?,
        })
    }

    pub fn open_reader(path: &Path) -> StoreResult<Self> {
        let schema = format!("{CONVERSATION_SCHEMA}{}{FENCE_TABLE}", cold::COLD_SCHEMA);
        Ok(SqliteConversationStore {
            db: Db::open(
                path,
                &schema,
                CONVERSATION_MIGRATIONS,
                false,
                Durability::Full,
            )?,
        })
    }
}

pub(super) fn parse_kind<T>(
    text: String,
    parse: impl Fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    parse(&text)
        .ok_or_else(|| rusqlite::Error::InvalidColumnType(0, text, rusqlite::types::Type::Text))
}

pub(super) fn message_kind(text: &str) -> Option<MessageKind> {
    serde_json::from_value(Value::String(text.to_string())).ok()
}

pub(super) fn message_kind_str(kind: MessageKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(super) const MESSAGE_COLUMNS: &str = "conversation_id, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to";

pub(super) fn message_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let body: String = row.get(8)?;
    let mentions: String = row.get(9)?;
    Ok(StoredMessage {
        conversation_id: row.get(0)?,
        seq: row.get::<_, i64>(1)? as u64,
        message_id: row.get(2)?,
        sender_id: row.get(3)?,
        source: row.get(4)?,
        event_id: row.get(5)?,
        sent_at: row.get(6)?,
        kind: parse_kind(row.get(7)?, message_kind)?,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        mentions: serde_json::from_str(&mentions).unwrap_or_default(),
        edited_at: row.get(10)?,
        recalled_at: row.get(11)?,
        recalled_by: row.get(12)?,
        reply_to: row.get::<_, Option<i64>>(13)?.map(|seq| seq as u64),
        reactions: vec![],
    })
}

impl ConversationStore for SqliteConversationStore {
    fn conversation(&self, conversation_id: &str) -> StoreResult<Option<ConversationRecord>> {
        self.db.read(|c| {
            c.row(
                "SELECT conversation_id, kind, title, last_seq, diffusion, member_count, created_at, history_visibility
                 FROM conversations WHERE conversation_id = ?1",
                params![conversation_id],
                |row| {
                    Ok(ConversationRecord {
                        conversation_id: row.get(0)?,
                        kind: parse_kind(row.get(1)?, ConversationKind::parse)?,
                        title: row.get(2)?,
                        last_seq: row.get::<_, i64>(3)? as u64,
                        diffusion: parse_kind(row.get(4)?, Diffusion::parse)?,
                        member_count: row.get::<_, i64>(5)? as u64,
                        created_at: row.get(6)?,
                        history_visibility: parse_kind(row.get(7)?, HistoryVisibility::parse)?,
                    })
                },
            )
            .optional()
        })
    }

    fn memberships(&self, conversation_id: &str, users: &[String]) -> StoreResult<Vec<Membership>> {
        self.db.read(|c| {
            let mut statement = c.prepare_cached(
                "SELECT role, added_after_seq FROM members WHERE conversation_id = ?1 AND user_id = ?2 AND removed_after_seq IS NULL",
            )?;
            let mut found = Vec::new();
            for user in users {
                let member: Option<(String, i64)> = statement
                    .query_row(params![conversation_id, user], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()?;
                if let Some((role, joined_seq)) = member {
                    found.push(Membership {
                        user_id: user.clone(),
                        role: Role::parse(&role),
                        joined_seq: joined_seq as u64,
                    });
                }
            }
            Ok(found)
        })
    }

    fn members_at(&self, conversation_id: &str, seq: u64) -> StoreResult<Vec<String>> {
        self.db.read(|c| {
            let mut statement = c.prepare_cached(
                "SELECT DISTINCT user_id FROM members WHERE conversation_id = ?1 AND added_after_seq < ?2
                 AND (removed_after_seq IS NULL OR removed_after_seq >= ?2) ORDER BY user_id",
            )?;
            let rows = statement.query_map(params![conversation_id, seq as i64], |row| row.get(0))?;
            rows.collect()
        })
    }

    fn current_members(&self, conversation_id: &str) -> StoreResult<Vec<String>> {
        self.db.read(|c| {
            let mut statement = c.prepare_cached(
                "SELECT user_id FROM members WHERE conversation_id = ?1 AND removed_after_seq IS NULL ORDER BY user_id",
            )?;
            let rows = statement.query_map(params![conversation_id], |row| row.get(0))?;
            rows.collect()
        })
    }

    fn idempotency(&self, source: &str, event_id: &str) -> StoreResult<Option<IdempotencyRecord>> {
        let row = self.db.read(|c| {
            c.row(
                "SELECT conversation_id, seq, message_id, outputs, recorded_at_ms, fingerprint FROM idempotency
                 WHERE source = ?1 AND event_id = ?2",
                params![source, event_id],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Option<i64>>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
        })?;
        row.map(
            |(conversation_id, seq, message_id, outputs, recorded_at_ms, fingerprint)| {
                Ok(IdempotencyRecord {
                    source: source.to_string(),
                    event_id: event_id.to_string(),
                    conversation_id,
                    seq: seq.map(|s| s as u64),
                    message_id,
                    outputs: serde_json::from_str(&outputs).map_err(json_error)?,
                    recorded_at_ms,
                    fingerprint,
                })
            },
        )
        .transpose()
    }

    fn message(&self, conversation_id: &str, seq: u64) -> StoreResult<Option<StoredMessage>> {
        self.db.read_with(|c| {
            let hot = c
                .row(
                    &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq = ?2"),
                    params![conversation_id, seq as i64],
                    message_from_row,
                )
                .optional()
                .map_err(backend)?;
            match hot {
                Some(message) => Ok(Some(message)),
                None => cold::cold_message(c, conversation_id, seq),
            }
        })
    }

    fn history(
        &self,
        conversation_id: &str,
        before_seq: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        let before = before_seq.map(|s| s as i64).unwrap_or(i64::MAX);
        // Newest first from the hot tier, then on into the cold tier below
        // the oldest hot message: the tiers never hold the same seq.
        let mut messages = self.db.read_with(|c| {
            let mut statement = c
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq < ?2 ORDER BY seq DESC"
                ))
                .map_err(backend)?;
            // No `LIMIT ?`: the bundled SQLite (STAT4) re-prepares a
            // statement whose LIMIT is a parameter on every new binding;
            // rows come in key order, so taking `limit` of them stops early.
            let mut messages = statement
                .query_map(params![conversation_id, before], message_from_row)
                .map_err(backend)?
                .take(limit)
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            if messages.len() < limit {
                let below = messages.last().map(|m| m.seq).unwrap_or(before as u64);
                messages.extend(cold::cold_before(c, conversation_id, below, limit - messages.len())?);
            }
            Ok(messages)
        })?;
        messages.reverse();
        Ok(messages)
    }

    fn reactions(
        &self,
        conversation_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> StoreResult<Vec<Reaction>> {
        self.db.read(|c| {
            let mut statement = c.prepare_cached(
                "SELECT seq, emoji, user_id FROM reactions WHERE conversation_id = ?1 AND seq >= ?2 AND seq <= ?3
                 ORDER BY seq, emoji, user_id",
            )?;
            let rows = statement.query_map(
                params![conversation_id, from_seq as i64, to_seq as i64],
                |row| {
                    Ok(Reaction {
                        conversation_id: conversation_id.to_string(),
                        seq: row.get::<_, i64>(0)? as u64,
                        emoji: row.get(1)?,
                        user_id: row.get(2)?,
                    })
                },
            )?;
            rows.collect()
        })
    }

    fn blocked(&self, user_id: &str, blocked_user_id: &str) -> StoreResult<bool> {
        self.db.read(|c| {
            c.row(
                "SELECT 1 FROM blocks WHERE user_id = ?1 AND blocked_user_id = ?2",
                params![user_id, blocked_user_id],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
        })
    }

    fn receipts(&self, conversation_id: &str) -> StoreResult<Vec<Receipt>> {
        self.db.read(|c| {
            let mut statement = c.prepare_cached(
                "SELECT user_id, read_seq, delivered_seq FROM receipts WHERE conversation_id = ?1 ORDER BY user_id",
            )?;
            let rows = statement.query_map(params![conversation_id], |row| {
                Ok(Receipt {
                    user_id: row.get(0)?,
                    read_seq: row.get::<_, i64>(1)? as u64,
                    delivered_seq: row.get::<_, i64>(2)? as u64,
                })
            })?;
            rows.collect()
        })
    }

    fn receipt(&self, conversation_id: &str, user_id: &str) -> StoreResult<Option<Receipt>> {
        self.db.read(|c| {
            c.row(
                "SELECT read_seq, delivered_seq FROM receipts WHERE conversation_id = ?1 AND user_id = ?2",
                params![conversation_id, user_id],
                |row| {
                    Ok(Receipt {
                        user_id: user_id.to_string(),
                        read_seq: row.get::<_, i64>(0)? as u64,
                        delivered_seq: row.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()
        })
    }

    fn apply(&self, fence: &Fence, effects: &[ConversationEffect]) -> StoreResult<()> {
        let (fence, effects) = (fence.clone(), effects.to_vec());
        self.db.apply_grouped(move |t| {
            check_fence(t, &fence)?;
            for effect in &effects {
                apply_conversation_effect(t, effect)?;
            }
            Ok(())
        })
    }

    fn sync(&self) -> StoreResult<()> {
        self.db.sync()
    }

    fn sync_deferred(&self) -> bool {
        self.db.sync_deferred()
    }

    fn dump(&self) -> StoreResult<Vec<String>> {
        let mut lines = self.db.read(|c| {
            let mut lines = Vec::new();
            let queries = [
                "SELECT 'conversation', conversation_id, kind, IFNULL(title,''), last_seq, diffusion, member_count, created_at, history_visibility FROM conversations ORDER BY conversation_id",
                "SELECT 'member', conversation_id, user_id, role, added_after_seq, IFNULL(removed_after_seq,-1) FROM members ORDER BY conversation_id, user_id, added_after_seq",
                "SELECT 'idempotency', source, event_id, conversation_id, IFNULL(seq,-1), IFNULL(message_id,''), outputs FROM idempotency ORDER BY source, event_id",
                "SELECT 'reaction', conversation_id, seq, emoji, user_id FROM reactions ORDER BY conversation_id, seq, emoji, user_id",
                "SELECT 'block', user_id, blocked_user_id FROM blocks ORDER BY user_id, blocked_user_id",
                "SELECT 'receipt', conversation_id, user_id, read_seq, delivered_seq FROM receipts ORDER BY conversation_id, user_id",
            ];
            for query in queries {
                dump_query(c, query, &mut lines)?;
            }
            Ok(lines)
        })?;
        // Messages read the same whichever tier holds them.
        let mut messages = self.db.read_with(|c| {
            let mut statement = c
                .prepare(&format!("SELECT {MESSAGE_COLUMNS} FROM messages"))
                .map_err(backend)?;
            let mut all = statement
                .query_map([], message_from_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            all.extend(cold::all_cold(c)?);
            Ok(all)
        })?;
        messages.sort_by(|a, b| (&a.conversation_id, a.seq).cmp(&(&b.conversation_id, b.seq)));
        let at = lines
            .iter()
            .position(|line| line.starts_with("idempotency\t"))
            .unwrap_or(lines.len());
        lines.splice(at..at, messages.iter().map(message_line));
        Ok(lines)
    }

    fn archive(
        &self,
        policy: &TieringPolicy,
        now_ms: i64,
        progress: &mut dyn FnMut(&ArchiveReport),
    ) -> StoreResult<ArchiveReport> {
        let cutoff = im_events::rfc3339_ms(now_ms - policy.hot_window_ms);
        let conversations: Vec<(String, String)> = self.db.read(|c| {
            let mut statement = c.prepare(
                "SELECT conversation_id, kind FROM conversations ORDER BY conversation_id",
            )?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })?;
        let mut report = ArchiveReport::default();
        if let Some(keep) = policy.keep_idempotency_ms {
            // In runs of 10,000 keys, each its own transaction, so a long
            // purge never holds the writer for long.
            loop {
                let purged = self.db.write(|t| {
                    t.execute(
                        "DELETE FROM idempotency WHERE (source, event_id) IN
                           (SELECT source, event_id FROM idempotency WHERE recorded_at_ms < ?1 LIMIT 10000)",
                        params![now_ms - keep],
                    )
                    .map_err(backend)
                })?;
                report.keys_purged += purged as u64;
                if purged == 0 {
                    break;
                }
            }
        }
        for (conversation_id, kind) in conversations {
            let retain = match ConversationKind::parse(&kind) {
                Some(ConversationKind::Direct) => policy.retain_direct_ms,
                _ => policy.retain_group_ms,
            };
            if let Some(retain) = retain {
                let before = im_events::rfc3339_ms(now_ms - retain);
                report.deleted += self
                    .db
                    .write(|t| cold::expire(t, &conversation_id, &before))?;
            }
            // One segment per transaction: a kill loses at most the move
            // in flight, which then never happened.
            loop {
                let moved = self
                    .db
                    .write(|t| cold::move_segment(t, &conversation_id, &cutoff, policy))?;
                if moved == 0 {
                    break;
                }
                report.moved += moved as u64;
                report.segments += 1;
            }
            report.conversations += 1;
            progress(&report);
        }
        Ok(report)
    }

    fn tier_stats(&self) -> StoreResult<TierStats> {
        self.db.read(|c| {
            let pages = |names: &str| -> rusqlite::Result<i64> {
                c.row(
                    &format!("SELECT IFNULL(SUM(pgsize), 0) FROM dbstat WHERE {names}"),
                    [],
                    |row| row.get(0),
                )
            };
            Ok(TierStats {
                hot_messages: c.row("SELECT COUNT(*) FROM messages", [], |r| r.get::<_, i64>(0))?
                    as u64,
                hot_bytes: pages("name = 'messages' OR name LIKE 'sqlite_autoindex_messages%'")?
                    as u64,
                cold_messages: c.row(
                    "SELECT IFNULL(SUM(count), 0) FROM cold_segments",
                    [],
                    |r| r.get::<_, i64>(0),
                )? as u64,
                cold_bytes: pages("name = 'cold_segments'")? as u64,
                cold_segments: c.row("SELECT COUNT(*) FROM cold_segments", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64,
            })
        })
    }
}
