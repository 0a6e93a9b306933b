//! The embedded backend: SQLite in WAL mode, one file per owning function.
//!
//! Several processes share a file: the owner writes, others read. WAL lets
//! readers proceed while the writer commits. `synchronous` is a deliberate
//! choice passed in by the caller: `FULL` (default) makes every acked effect
//! survive power loss; `NORMAL` survives any process crash (SIGKILL) but may
//! lose the last transactions on power loss, which replay from JetStream
//! then restores.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use im_events::{ConversationKind, Diffusion, HistoryVisibility, MessageKind};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde_json::Value;

mod cold;
mod notifications;
pub use notifications::{notifications_in, SqliteNotificationStore, NOTIFICATIONS_FILE};

use crate::{
    ArchiveReport, ConversationEffect, ConversationRecord, ConversationStore, Fence,
    IdempotencyRecord, Membership, Reaction, Receipt, Role, StoreError, StoreResult, StoredMessage,
    SyncRecord, TierStats, TieringPolicy, UserConversation, UserEffect, UserStore,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync the WAL on every commit (the `strict` profile): a commit that
    /// returned survives power loss.
    #[default]
    Full,
    /// fsync the WAL at most every [`RELAXED_SYNC_EVERY`] (the `relaxed`
    /// profile): commits survive any process crash; an OS crash or power
    /// loss may lose the last 100 ms of them, which replay from JetStream
    /// restores.
    Relaxed,
    /// fsync only at checkpoints (tests, replay into a scratch directory):
    /// survives process crashes only.
    Normal,
}

/// How often the `relaxed` profile makes committed transactions durable.
pub const RELAXED_SYNC_EVERY: Duration = Duration::from_millis(100);

impl Durability {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "full" => Some(Durability::Full),
            "relaxed" => Some(Durability::Relaxed),
            "normal" => Some(Durability::Normal),
            _ => None,
        }
    }
}

/// The `relaxed` profile's syncer: every [`RELAXED_SYNC_EVERY`], fsync the
/// WAL if anything was committed since the last time (an fsync through any
/// descriptor makes every written page of the file durable). Stops when the
/// store is dropped.
fn spawn_wal_syncer(path: &Path, commits: std::sync::Weak<std::sync::atomic::AtomicU64>) {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let spawned = std::thread::Builder::new()
        .name("im-wal-sync".into())
        .spawn(move || {
            let mut synced = 0u64;
            let mut file: Option<std::fs::File> = None;
            loop {
                std::thread::sleep(RELAXED_SYNC_EVERY);
                let Some(commits) = commits.upgrade() else {
                    return;
                };
                let now = commits.load(std::sync::atomic::Ordering::Acquire);
                if now == synced {
                    continue;
                }
                if file.is_none() {
                    file = std::fs::File::open(&wal).ok();
                }
                match file.as_ref().map(std::fs::File::sync_data) {
                    Some(Ok(())) => synced = now,
                    // Reopen next time (the WAL may have been recreated).
                    _ => file = None,
                }
            }
        });
    if let Err(error) = spawned {
        eprintln!(
            "cannot start the WAL syncer for {}: {error}",
            path.display()
        );
    }
}

/// The file of each owning function in a data directory.
pub const CONVERSATIONS_FILE: &str = "dedupe.db";
pub const USERS_FILE: &str = "unread.db";

fn opening(path: &Path) -> impl Fn(StoreError) -> StoreError + '_ {
    move |error| StoreError::Backend(format!("open {}: {error}", path.display()))
}

/// The conversation store of `data_dir`: writable with `owner` durability by
/// its owner (dedupe), read-only for everyone else.
pub fn conversations_in(
    data_dir: &Path,
    owner: Option<Durability>,
) -> StoreResult<SqliteConversationStore> {
    let path = data_dir.join(CONVERSATIONS_FILE);
    match owner {
        Some(durability) => SqliteConversationStore::open_writer(&path, durability),
        None => SqliteConversationStore::open_reader(&path),
    }
    .map_err(opening(&path))
}

/// The user store of `data_dir`: writable by its owner (unread), read-only
/// for everyone else.
pub fn users_in(data_dir: &Path, owner: Option<Durability>) -> StoreResult<SqliteUserStore> {
    let path = data_dir.join(USERS_FILE);
    match owner {
        Some(durability) => SqliteUserStore::open_writer(&path, durability),
        None => SqliteUserStore::open_reader(&path),
    }
    .map_err(opening(&path))
}

/// Statements through the connection's cache of prepared statements: perf
/// of the pipeline at saturation showed SQLite parsing the same SQL again
/// for every effect applied (`sqlite3RunParser`, `yy_reduce`).
trait Cached {
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Enough for every distinct statement of a store (the default is 16).
const STATEMENT_CACHE: usize = 64;

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn json_error(error: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("stored json: {error}"))
}

/// Run a group's jobs in one transaction, each in a savepoint (a lone job
/// needs none: its failure rolls the transaction back), and hand every job
/// its result. The savepoint statements come from the statement cache: a
/// text parsed per commit cost more than the commit's own writes.
fn run_group(connection: &mut Connection, jobs: Vec<GroupJob>) {
    let fail_all = |results: Vec<std::sync::Arc<Mutex<Option<StoreResult<()>>>>>,
                    error: StoreError| {
        for result in results {
            *result.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(error.clone()));
        }
    };
    let transaction =
        match connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(transaction) => transaction,
            Err(error) => {
                return fail_all(
                    jobs.into_iter().map(|job| job.result).collect(),
                    group_error("begin", error),
                )
            }
        };
    let alone = jobs.len() == 1;
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        if alone {
            let outcome = (job.work)(&transaction);
            outcomes.push((job.result, outcome));
            continue;
        }
        if let Err(error) = transaction.run("SAVEPOINT job", []) {
            let mut results: Vec<_> = outcomes.into_iter().map(|(result, _)| result).collect();
            results.push(job.result);
            return fail_all(results, group_error("savepoint", error));
        }
        let outcome = (job.work)(&transaction);
        let closed = if outcome.is_err() {
            transaction
                .run("ROLLBACK TO job", [])
                .and_then(|_| transaction.run("RELEASE job", []))
        } else {
            transaction.run("RELEASE job", [])
        };
        if let Err(error) = closed {
            let mut results: Vec<_> = outcomes.into_iter().map(|(result, _)| result).collect();
            results.push(job.result);
            return fail_all(results, group_error("release", error));
        }
        outcomes.push((job.result, outcome));
    }
    if alone && outcomes.iter().any(|(_, outcome)| outcome.is_err()) {
        // Nothing of a lone failed job may commit.
        drop(transaction);
        for (result, outcome) in outcomes {
            *result.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        }
        return;
    }
    match transaction.commit() {
        Ok(()) => {
            for (result, outcome) in outcomes {
                *result.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
            }
        }
        Err(error) => fail_all(
            outcomes.into_iter().map(|(result, _)| result).collect(),
            group_error("commit", error),
        ),
    }
}

/// The schema changes of one store file since its first release, in order:
/// entry `i` takes a file from schema version `i` to `i + 1` (SQLite's
/// `user_version`). A new file is created with the current schema and the
/// latest version at once; an older one is upgraded in place, each step in
/// its own transaction that first re-reads the version (so two processes
/// opening it at once apply a step once); a newer one is refused.
type Migrations = &'static [&'static str];

enum MigrationError {
    Sqlite(rusqlite::Error),
    Newer { found: i64, known: i64 },
}

impl From<rusqlite::Error> for MigrationError {
    fn from(error: rusqlite::Error) -> Self {
        MigrationError::Sqlite(error)
    }
}

fn prepare_schema(
    connection: &Connection,
    schema: &str,
    migrations: Migrations,
) -> Result<(), MigrationError> {
    let known = migrations.len() as i64;
    let version =
        |c: &Connection| c.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0));
    let fresh = connection.query_row(
        "SELECT count(*) = 0 FROM sqlite_master WHERE type = 'table'",
        [],
        |row| row.get::<_, bool>(0),
    )?;
    if fresh {
        connection.execute_batch(&format!(
            "BEGIN IMMEDIATE; {schema}; PRAGMA user_version = {known}; COMMIT;"
        ))?;
        return Ok(());
    }
    let found = version(connection)?;
    if found > known {
        return Err(MigrationError::Newer { found, known });
    }
    for (step, sql) in migrations.iter().enumerate().skip(found as usize) {
        connection.execute_batch("BEGIN IMMEDIATE")?;
        let applied = (|| {
            if version(connection)? == step as i64 {
                run_migration(connection, sql)?;
                connection.pragma_update(None, "user_version", step as i64 + 1)?;
            }
            Ok::<_, rusqlite::Error>(())
        })();
        match applied {
            Ok(()) => connection.execute_batch("COMMIT")?,
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                return Err(error.into());
            }
        }
    }
    // Tables added in the current schema (IF NOT EXISTS) for older files.
    connection.execute_batch(schema)?;
    Ok(())
}

/// One migration step, statement by statement. `ALTER TABLE t ADD COLUMN c`
/// is skipped where `t` does not exist yet (the current schema, applied
/// after the steps, creates it with `c`) or already has `c`.
fn run_migration(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let words: Vec<&str> = statement.split_whitespace().collect();
        if let ["ALTER", "TABLE", table, "ADD", "COLUMN", column, ..] = words.as_slice() {
            let mut columns = connection.prepare(&format!("PRAGMA table_info({table})"))?;
            let names: Vec<String> = columns
                .query_map([], |row| row.get::<_, String>(1))?
                .collect::<rusqlite::Result<_>>()?;
            if names.is_empty() || names.iter().any(|name| name == column) {
                continue;
            }
        }
        connection.execute_batch(statement)?;
    }
    Ok(())
}

/// One file: a writer connection (if this process owns it) and a reader.
struct Db {
    path: PathBuf,
    writer: Option<Mutex<Connection>>,
    reader: Mutex<Connection>,
    /// Applies waiting for the next group commit (see [`Db::apply_grouped`]).
    queue: Mutex<Vec<GroupJob>>,
    /// Transactions committed, for the `relaxed` profile's syncer.
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// One caller's share of a group commit: its writes, run inside a savepoint
/// of the group's transaction, and where its result goes.
type GroupWork = Box<dyn FnOnce(&Transaction<'_>) -> StoreResult<()> + Send>;

struct GroupJob {
    work: GroupWork,
    result: std::sync::Arc<Mutex<Option<StoreResult<()>>>>,
}

/// A failure of the group's transaction itself: every job of the group is
/// retried by its caller.
fn group_error(what: &str, error: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("group commit ({what}): {error}"))
}

impl Db {
    fn open(
        path: &Path,
        schema: &str,
        migrations: Migrations,
        writable: bool,
        durability: Durability,
    ) -> StoreResult<Db> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Backend(format!("create {}: {e}", parent.display())))?;
        }
        // Every opener makes sure the schema exists (idempotent), so a reader
        // that starts before the owner does not fail. Switching to WAL needs
        // an exclusive lock and SQLite reports a concurrent opener as busy
        // without waiting, so retry for a while.
        let init = Connection::open(path).map_err(backend)?;
        init.busy_timeout(Duration::from_secs(10))
            .map_err(backend)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let attempt = match init
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(MigrationError::from)
                .and_then(|()| prepare_schema(&init, schema, migrations))
            {
                Ok(()) => Ok(()),
                Err(MigrationError::Sqlite(error)) => Err(error),
                Err(MigrationError::Newer { found, known }) => {
                    return Err(StoreError::Incompatible(format!(
                        "{} has schema version {found}, newer than this build's {known}: run the newer build, or rebuild the store from JetStream with `imctl replay --into <new data dir>`",
                        path.display()
                    )))
                }
            };
            match attempt {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(error, _))
                    if matches!(
                        error.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => return Err(backend(error)),
            }
        }
        let writer = if writable {
            let sync = match durability {
                Durability::Full => "FULL",
                Durability::Relaxed | Durability::Normal => "NORMAL",
            };
            init.pragma_update(None, "synchronous", sync)
                .map_err(backend)?;
            init.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            Some(Mutex::new(init))
        } else {
            drop(init);
            None
        };
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(backend)?;
        reader
            .busy_timeout(Duration::from_secs(10))
            .map_err(backend)?;
        reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        if writer.is_some() && durability == Durability::Relaxed {
            spawn_wal_syncer(path, std::sync::Arc::downgrade(&commits));
        }
        Ok(Db {
            path: path.to_path_buf(),
            writer,
            reader: Mutex::new(reader),
            queue: Mutex::new(Vec::new()),
            commits,
        })
    }

    /// Group commit: every apply that arrives while another is committing
    /// waits, and the next committer takes all of them into one transaction,
    /// so concurrent partitions of a process share one fsync instead of
    /// paying one each. Each caller's writes run in a savepoint of their
    /// own: one that fails (its fence refuses it, a seq conflict) is rolled
    /// back alone and gets its error; the others commit. If the commit
    /// itself fails, every caller gets the error and retries in place (its
    /// writes are not durable). Nothing waits when nothing else is
    /// committing, so a lone write is as fast as before.
    fn apply_grouped(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> StoreResult<()> + Send + 'static,
    ) -> StoreResult<()> {
        let Some(writer) = &self.writer else {
            return Err(StoreError::Backend(format!(
                "{} is opened read-only in this process",
                self.path.display()
            )));
        };
        let result = std::sync::Arc::new(Mutex::new(None));
        self.queue
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(GroupJob {
                work: Box::new(work),
                result: result.clone(),
            });
        let mut connection = writer.lock().unwrap_or_else(|poison| poison.into_inner());
        // A committer that held the connection before us took our job.
        if let Some(done) = result.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return done;
        }
        let jobs = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        metrics::histogram!("im_store_group_commit_size").record(jobs.len() as f64);
        run_group(&mut connection, jobs);
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        let done = result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| Err(StoreError::Backend("group commit lost a job".into())));
        done
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let connection = self
            .reader
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&connection).map_err(backend)
    }

    /// A read whose closure maps its own errors (it may decode as well).
    fn read_with<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let connection = self
            .reader
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&connection)
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let Some(writer) = &self.writer else {
            return Err(StoreError::Backend(format!(
                "{} is opened read-only in this process",
                self.path.display()
            )));
        };
        let mut connection = writer.lock().unwrap_or_else(|poison| poison.into_inner());
        let transaction = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        let result = f(&transaction)?;
        transaction.commit().map_err(backend)?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(result)
    }
}

const FENCE_TABLE: &str = "CREATE TABLE IF NOT EXISTS fences(scope TEXT NOT NULL, partition INTEGER NOT NULL, epoch INTEGER NOT NULL, PRIMARY KEY(scope, partition));";

/// Refuse a write from an epoch older than the newest seen, and remember the
/// newest. Runs inside the write transaction, so it cannot be raced.
fn check_fence(transaction: &Transaction<'_>, fence: &Fence) -> StoreResult<()> {
    let current: Option<i64> = transaction
        .row(
            "SELECT epoch FROM fences WHERE scope = ?1 AND partition = ?2",
            params![fence.scope, fence.partition],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend)?;
    let current = current.unwrap_or(0) as u64;
    if current > fence.epoch {
        return Err(StoreError::Fenced {
            scope: fence.scope.clone(),
            partition: fence.partition,
            current,
            attempted: fence.epoch,
        });
    }
    if current < fence.epoch {
        transaction
            .run(
                "INSERT INTO fences(scope, partition, epoch) VALUES (?1, ?2, ?3)
                 ON CONFLICT(scope, partition) DO UPDATE SET epoch = excluded.epoch",
                params![fence.scope, fence.partition, fence.epoch as i64],
            )
            .map_err(backend)?;
    }
    Ok(())
}

const CONVERSATION_SCHEMA: &str = "
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
  conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL UNIQUE,
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
const CONVERSATION_MIGRATIONS: Migrations = &[
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
];

pub struct SqliteConversationStore {
    db: Db,
}

impl SqliteConversationStore {
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

fn parse_kind<T>(text: String, parse: impl Fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    parse(&text)
        .ok_or_else(|| rusqlite::Error::InvalidColumnType(0, text, rusqlite::types::Type::Text))
}

fn message_kind(text: &str) -> Option<MessageKind> {
    serde_json::from_value(Value::String(text.to_string())).ok()
}

fn message_kind_str(kind: MessageKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

const MESSAGE_COLUMNS: &str = "conversation_id, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to";

fn message_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
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

fn dump_query(
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

fn apply_conversation_effect(t: &Transaction<'_>, effect: &ConversationEffect) -> StoreResult<()> {
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
                    record.outputs.to_string(),
                    record.recorded_at_ms,
                    record.fingerprint
                ],
            )
            .map_err(backend)?;
        }
    }
    Ok(())
}

const USER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS user_conversations(
  user_id TEXT NOT NULL, conversation_id TEXT NOT NULL, last_seq INTEGER NOT NULL, read_seq INTEGER NOT NULL,
  joined_seq INTEGER NOT NULL, diffusion TEXT NOT NULL, muted_until_ms INTEGER, last_message TEXT,
  PRIMARY KEY(user_id, conversation_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_sync(
  user_id TEXT NOT NULL, sync_seq INTEGER NOT NULL, event_key TEXT NOT NULL, item TEXT NOT NULL,
  PRIMARY KEY(user_id, sync_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_effects(
  user_id TEXT NOT NULL, event_key TEXT NOT NULL, PRIMARY KEY(user_id, event_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_sync_floor(
  user_id TEXT NOT NULL PRIMARY KEY, floor INTEGER NOT NULL) WITHOUT ROWID;
";

/// Changes to `unread.db` since its first release (see [`Migrations`]).
const USER_MIGRATIONS: Migrations = &[];

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

const USER_CONVERSATION_COLUMNS: &str =
    "user_id, conversation_id, last_seq, read_seq, joined_seq, diffusion, muted_until_ms, last_message";

fn user_conversation_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserConversation> {
    let last_message: Option<String> = row.get(7)?;
    Ok(UserConversation {
        user_id: row.get(0)?,
        conversation_id: row.get(1)?,
        last_seq: row.get::<_, i64>(2)? as u64,
        read_seq: row.get::<_, i64>(3)? as u64,
        joined_seq: row.get::<_, i64>(4)? as u64,
        diffusion: parse_kind(row.get(5)?, Diffusion::parse)?,
        muted_until_ms: row.get(6)?,
        last_message: last_message.and_then(|text| serde_json::from_str(&text).ok()),
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
                    item: serde_json::from_str(&item).unwrap_or(Value::Null),
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

fn apply_user_effect(t: &Transaction<'_>, effect: &UserEffect) -> StoreResult<()> {
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
                    row.last_message.as_ref().map(Value::to_string)
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
                    record.item.to_string()
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

#[cfg(test)]
mod tests;
