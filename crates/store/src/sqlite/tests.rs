use super::*;
use crate::conformance;

struct Backend {
    _dir: tempfile::TempDir,
    conversations: SqliteConversationStore,
    users: SqliteUserStore,
    conversations_path: PathBuf,
}

fn backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let conversations_path = dir.path().join("dedupe.db");
    Backend {
        conversations: SqliteConversationStore::open_writer(
            &conversations_path,
            Durability::Normal,
        )
        .unwrap(),
        users: SqliteUserStore::open_writer(&dir.path().join("unread.db"), Durability::Normal)
            .unwrap(),
        conversations_path,
        _dir: dir,
    }
}

crate::conformance_suite! {
    stores: |_check: &str| {
        let backend = backend();
        Some(conformance::Stores {
            conversations: Box::new(backend.conversations),
            users: Box::new(backend.users),
            guard: Box::new(backend._dir),
        })
    },
    notifications: |_check: &str| {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteNotificationStore::open_writer(
            &dir.path().join(NOTIFICATIONS_FILE),
            Durability::Normal,
        )
        .unwrap();
        Some(conformance::Notifications {
            store: Box::new(store),
            guard: Box::new(dir),
        })
    },
    left_out: &[],
}

/// A dedupe.db as the first release made it: no user_version, and an
/// idempotency table without the fingerprint column, a conversations
/// table without history visibility.
fn first_release_file(path: &Path) {
    let connection = Connection::open(path).unwrap();
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE idempotency(
               source TEXT NOT NULL, event_id TEXT NOT NULL, conversation_id TEXT NOT NULL, seq INTEGER,
               message_id TEXT, outputs TEXT NOT NULL, recorded_at_ms INTEGER NOT NULL,
               PRIMARY KEY(source, event_id)) WITHOUT ROWID;
             INSERT INTO idempotency VALUES ('urn:old', 'e1', 'g:1', 3, 'm3', '[]', 1000);
             CREATE TABLE conversations(
               conversation_id TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT, last_seq INTEGER NOT NULL,
               diffusion TEXT NOT NULL, member_count INTEGER NOT NULL, created_at TEXT NOT NULL) WITHOUT ROWID;
             INSERT INTO conversations VALUES ('g:1', 'group', 'Old', 3, 'write', 2, '2026-01-01T00:00:00.000Z');",
        )
        .unwrap();
}

#[test]
fn a_file_of_the_first_release_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CONVERSATIONS_FILE);
    first_release_file(&path);
    // A reader and the writer may both be first to open it.
    let reader = SqliteConversationStore::open_reader(&path).unwrap();
    let store = SqliteConversationStore::open_writer(&path, Durability::Normal).unwrap();
    let old = store.idempotency("urn:old", "e1").unwrap().unwrap();
    assert_eq!((old.seq, old.fingerprint.as_str()), (Some(3), ""));
    // Conversations made before history visibility keep `joined`.
    let conversation = reader.conversation("g:1").unwrap().unwrap();
    assert_eq!(
        (conversation.last_seq, conversation.history_visibility),
        (3, HistoryVisibility::Joined)
    );
    let mut new = old.clone();
    new.event_id = "e2".into();
    new.fingerprint = "im.message.send a".into();
    store
        .apply(&fence(1), &[ConversationEffect::RecordEvent(new.clone())])
        .unwrap();
    assert_eq!(reader.idempotency("urn:old", "e2").unwrap(), Some(new));
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, CONVERSATION_MIGRATIONS.len() as i64);
    // Opening again applies nothing twice.
    SqliteConversationStore::open_writer(&path, Durability::Normal).unwrap();
}

/// A file of the release before replies and reactions (version 3):
/// messages gain `reply_to`, the new tables appear, old rows read on.
#[test]
fn a_file_from_before_replies_and_reactions_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CONVERSATIONS_FILE);
    {
        let store = SqliteConversationStore::open_writer(&path, Durability::Normal).unwrap();
        store
            .apply(
                &fence(1),
                &[ConversationEffect::InsertMessage(conformance::message(
                    "g:1", 1, "m1",
                ))],
            )
            .unwrap();
    }
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "ALTER TABLE messages DROP COLUMN reply_to; DROP TABLE reactions; DROP TABLE blocks;
         DROP TABLE receipts; PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(old);
    let store = SqliteConversationStore::open_writer(&path, Durability::Normal).unwrap();
    assert_eq!(store.message("g:1", 1).unwrap().unwrap().reply_to, None);
    let mut reply = conformance::message("g:1", 2, "m2");
    reply.reply_to = Some(1);
    store
        .apply(
            &fence(1),
            &[
                ConversationEffect::InsertMessage(reply),
                ConversationEffect::Block {
                    user_id: "a".into(),
                    blocked_user_id: "b".into(),
                    blocked: true,
                },
            ],
        )
        .unwrap();
    assert_eq!(store.message("g:1", 2).unwrap().unwrap().reply_to, Some(1));
    assert!(store.blocked("a", "b").unwrap());
    assert!(store.reactions("g:1", 1, 2).unwrap().is_empty());
    assert!(store.receipts("g:1").unwrap().is_empty());
}

/// A file of version 4, whose messages table held message ids unique:
/// its messages are copied into the table without, and read on; a repeat
/// whose idempotency key was purged is then stored as new.
#[test]
fn a_file_whose_message_ids_were_unique_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CONVERSATIONS_FILE);
    drop(SqliteConversationStore::open_writer(&path, Durability::Normal).unwrap());
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "DROP TABLE messages;
         CREATE TABLE messages(
           conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL UNIQUE,
           sender_id TEXT NOT NULL, source TEXT NOT NULL, event_id TEXT NOT NULL, sent_at TEXT NOT NULL,
           kind TEXT NOT NULL, body TEXT NOT NULL, mentions TEXT NOT NULL,
           edited_at TEXT, recalled_at TEXT, recalled_by TEXT, reply_to INTEGER,
           PRIMARY KEY(conversation_id, seq)) WITHOUT ROWID;
         INSERT INTO messages VALUES ('g:1', 1, 'm1', 'alice', 'urn:a', 'e1', '2026-01-01T00:00:00.000Z',
           'text', '{\"text\":\"old\"}', '[\"bob\"]', NULL, NULL, NULL, NULL);
         PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(old);
    let store = SqliteConversationStore::open_writer(&path, Durability::Normal).unwrap();
    let first = store.message("g:1", 1).unwrap().unwrap();
    assert_eq!(
        (
            first.message_id.as_str(),
            first.body.clone(),
            first.mentions.clone()
        ),
        (
            "m1",
            serde_json::json!({"text": "old"}),
            vec!["bob".to_string()]
        )
    );
    let mut repeat = first.clone();
    repeat.seq = 2;
    store
        .apply(&fence(1), &[ConversationEffect::InsertMessage(repeat)])
        .unwrap();
    assert_eq!(store.message("g:1", 2).unwrap().unwrap().message_id, "m1");
    let unique_indexes: i64 = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(unique_indexes, 0);
}

/// A writer opened `Deferred` says so and syncs on request; the other
/// durabilities, and any reader, need no sync.
#[test]
fn a_deferred_writer_syncs_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let deferred = conversations_in(dir.path(), Some(Durability::Deferred)).unwrap();
    assert!(deferred.sync_deferred());
    deferred
        .apply(
            &fence(1),
            &[ConversationEffect::InsertMessage(conformance::message(
                "g:1", 1, "m1",
            ))],
        )
        .unwrap();
    deferred.sync().unwrap();
    assert_eq!(deferred.deferred_syncs(), 1);
    // A sync covers the file, not only this writer's commits: a second
    // writer of the file (a replica that took the partition over) that
    // committed nothing itself still syncs, since it may answer an event
    // the previous owner committed and never synced.
    let successor = conversations_in(dir.path(), Some(Durability::Deferred)).unwrap();
    successor.sync().unwrap();
    assert_eq!(successor.deferred_syncs(), 1);
    let reader = conversations_in(dir.path(), None).unwrap();
    assert!(!reader.sync_deferred());
    assert_eq!(reader.message("g:1", 1).unwrap().unwrap().message_id, "m1");
    let other = tempfile::tempdir().unwrap();
    for durability in [Durability::Full, Durability::Relaxed, Durability::Normal] {
        let store = conversations_in(other.path(), Some(durability)).unwrap();
        assert!(!store.sync_deferred(), "{durability:?}");
        store.sync().unwrap();
    }
}

/// An unread.db of the first release (version 0), whose sync log was a
/// table keyed by (user, sync_seq): its items are copied into the appended
/// table and read on in order; the next append follows them, and a second
/// item at a taken sync_seq is still refused.
#[test]
fn an_unread_file_of_the_first_release_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(USERS_FILE);
    let item = |seq: u64| serde_json::to_string(&conformance::read_item(seq)).unwrap();
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE user_conversations(
           user_id TEXT NOT NULL, conversation_id TEXT NOT NULL, last_seq INTEGER NOT NULL, read_seq INTEGER NOT NULL,
           joined_seq INTEGER NOT NULL, diffusion TEXT NOT NULL, muted_until_ms INTEGER, last_message TEXT,
           PRIMARY KEY(user_id, conversation_id)) WITHOUT ROWID;
         CREATE TABLE user_sync(
           user_id TEXT NOT NULL, sync_seq INTEGER NOT NULL, event_key TEXT NOT NULL, item TEXT NOT NULL,
           PRIMARY KEY(user_id, sync_seq)) WITHOUT ROWID;
         CREATE TABLE user_effects(
           user_id TEXT NOT NULL, event_key TEXT NOT NULL, PRIMARY KEY(user_id, event_key)) WITHOUT ROWID;
         CREATE TABLE user_sync_floor(
           user_id TEXT NOT NULL PRIMARY KEY, floor INTEGER NOT NULL) WITHOUT ROWID;",
    )
    .unwrap();
    // Written out of order: the copy keeps each user's sync_seq order.
    for (user, seq) in [("bob", 2), ("amy", 1), ("bob", 1)] {
        old.execute(
            "INSERT INTO user_sync VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![user, seq, format!("m:c:{seq}"), item(seq)],
        )
        .unwrap();
    }
    drop(old);
    let store = SqliteUserStore::open_writer(&path, Durability::Normal).unwrap();
    let seqs = |user: &str| -> Vec<u64> {
        store
            .sync_items(user, 0, 10)
            .unwrap()
            .iter()
            .map(|record| record.sync_seq)
            .collect()
    };
    assert_eq!(seqs("bob"), [1, 2]);
    assert_eq!(seqs("amy"), [1]);
    assert_eq!(store.last_sync_seq("bob").unwrap(), 2);
    let append = |seq: u64| {
        store.apply(
            &fence(1),
            &[UserEffect::AppendSync(SyncRecord {
                user_id: "bob".into(),
                sync_seq: seq,
                event_key: format!("m:c:{seq}"),
                item: conformance::read_item(seq),
            })],
        )
    };
    append(3).unwrap();
    assert_eq!(seqs("bob"), [1, 2, 3]);
    assert!(matches!(
        append(2),
        Err(StoreError::SeqConflict { seq: 2, .. })
    ));
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, users::USER_MIGRATIONS.len() as i64);
}

#[test]
fn a_file_of_a_newer_version_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CONVERSATIONS_FILE);
    SqliteConversationStore::open_writer(&path, Durability::Normal).unwrap();
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let Err(error) = SqliteConversationStore::open_writer(&path, Durability::Normal) else {
        panic!("a newer file was opened");
    };
    let text = error.to_string();
    assert!(matches!(error, StoreError::Incompatible(_)), "{text}");
    assert!(
        text.contains("schema version 99") && text.contains("imctl replay"),
        "{text}"
    );
}

fn fence(epoch: u64) -> Fence {
    Fence {
        scope: "dedupe".into(),
        partition: 0,
        epoch,
    }
}

#[test]
fn concurrent_openers_do_not_fail_on_the_lock() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.db");
        let openers: Vec<_> = (0..6)
            .map(|n| {
                let path = path.clone();
                std::thread::spawn(move || {
                    if n == 0 {
                        SqliteConversationStore::open_writer(&path, Durability::Full).map(|_| ())
                    } else {
                        SqliteConversationStore::open_reader(&path).map(|_| ())
                    }
                })
            })
            .collect();
        for opener in openers {
            opener
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
}

#[test]
fn a_second_process_reads_what_the_writer_committed() {
    let backend = backend();
    conformance::conversation_round_trip(&backend.conversations, &backend.users);
    let reader = SqliteConversationStore::open_reader(&backend.conversations_path).unwrap();
    assert!(reader.conversation("g:conformance").unwrap().is_some());
    let fence = conformance::fence(1);
    assert!(matches!(
        reader.apply(&fence, &[]),
        Err(StoreError::Backend(_))
    ));
}

/// The WAL's frames reach the database file without a commit paying for
/// it: the keeper thread checkpoints them. What this writes (~600 pages)
/// is below the writer's own threshold (and below SQLite's default of
/// 1,000): without the keeper nothing would reach the file while the
/// store is open.
#[test]
fn the_wal_keeper_checkpoints_what_was_committed_off_the_commit_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keeper.db");
    let db = Db::open(
        &path,
        "CREATE TABLE IF NOT EXISTS blobs(n INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        &[],
        true,
        Durability::Normal,
    )
    .unwrap();
    // ~600 pages of 4 KiB, in 20 commits.
    for batch in 0..20 {
        db.write(|tx| {
            for n in 0..30 {
                tx.execute(
                    "INSERT INTO blobs(n, body) VALUES (?1, zeroblob(4000))",
                    [batch * 30 + n],
                )
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            }
            Ok(())
        })
        .unwrap();
    }
    let wal_bytes = || std::fs::metadata(format!("{}-wal", path.display())).map(|m| m.len());
    assert!(
        wal_bytes().unwrap() > 1_000_000,
        "the commits wrote to the WAL"
    );
    let deadline = std::time::Instant::now() + CHECKPOINT_EVERY * 10;
    loop {
        let db_bytes = std::fs::metadata(&path).unwrap().len();
        if db_bytes > 2_000_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was checkpointed: {db_bytes} bytes in the database file"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(db);
}
