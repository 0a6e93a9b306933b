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
mod conversation_effects;
mod conversations;
mod notifications;
mod users;
pub use conversation_effects::message_line;
use conversation_effects::*;
pub use conversations::SqliteConversationStore;
use conversations::*;
pub use notifications::{notifications_in, SqliteNotificationStore, NOTIFICATIONS_FILE};
pub use users::SqliteUserStore;

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
    /// fsync the WAL when the writer asks ([`ConversationStore::sync`]), not
    /// in each commit (the `strict` profile for dedupe, which acks nothing
    /// before that): a commit is visible when it returns, durable once a
    /// sync after it returns. What it commits in between may be used where
    /// a loss is made good by JetStream's redelivery of the unacked input:
    /// dedupe pushes a commit's messages to online devices before its sync,
    /// and the same input redelivered after an OS crash commits the same
    /// seq again.
    Deferred,
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

/// How often the WAL's committed frames are copied into the database file,
/// by a thread of the writing process instead of the commit that happens to
/// cross SQLite's threshold: that commit paid for the copy and its fsyncs
/// (about a tenth of dedupe's and unread's CPU at saturation, `perf` in
/// docs/BENCHMARKS.md), and a page written many times between two copies is
/// copied once.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The writer's own checkpoint threshold, in WAL pages: only a backstop for
/// when the checkpoint thread falls behind (SQLite's default is 1,000).
pub const CHECKPOINT_BACKSTOP_PAGES: i64 = 16_000;

/// The writing process's WAL keeper: every [`CHECKPOINT_EVERY`] a passive
/// checkpoint (it waits for no reader or writer), and under the `relaxed`
/// profile every [`RELAXED_SYNC_EVERY`] an fsync of the WAL (through any
/// descriptor it makes every written page of the file durable). Each runs
/// only if something was committed since it last ran; the thread stops
/// when the store is dropped.
fn spawn_wal_keeper(
    path: &Path,
    durability: Durability,
    commits: std::sync::Weak<std::sync::atomic::AtomicU64>,
) {
    let database = path.to_path_buf();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let tick = match durability {
        Durability::Relaxed => RELAXED_SYNC_EVERY,
        _ => CHECKPOINT_EVERY,
    };
    let spawned = std::thread::Builder::new()
        .name("im-wal-keeper".into())
        .spawn(move || {
            let (mut synced, mut checkpointed) = (0u64, 0u64);
            let mut last_checkpoint = std::time::Instant::now();
            let mut file: Option<std::fs::File> = None;
            let mut connection: Option<Connection> = None;
            loop {
                std::thread::sleep(tick);
                let Some(commits) = commits.upgrade() else {
                    return;
                };
                let now = commits.load(std::sync::atomic::Ordering::Acquire);
                drop(commits);
                if durability == Durability::Relaxed && now != synced {
                    if file.is_none() {
                        file = std::fs::File::open(&wal).ok();
                    }
                    match file.as_ref().map(std::fs::File::sync_data) {
                        Some(Ok(())) => synced = now,
                        // Reopen next time (the WAL may have been recreated).
                        _ => file = None,
                    }
                }
                if now != checkpointed && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    last_checkpoint = std::time::Instant::now();
                    if connection.is_none() {
                        // Never creates the file: one moved away stays gone.
                        connection = Connection::open_with_flags(
                            &database,
                            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                        )
                        .ok();
                    }
                    let done = connection
                        .as_ref()
                        .map(|c| c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())));
                    match done {
                        Some(Ok(())) => checkpointed = now,
                        // A busy database or a lost file: the next tick
                        // tries again (the writer's backstop still holds).
                        _ => connection = None,
                    }
                }
            }
        });
    if let Err(error) = spawned {
        eprintln!(
            "cannot start the WAL keeper for {}: {error}",
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

/// The writer's page cache, in KiB (SQLite's `cache_size`; its default is
/// 2 MiB). The pages a commit touches are spread over every active
/// conversation's and sender's part of the tables: with 2 MiB most of them
/// had dropped out again and were read back with a `pread` each (7 % of
/// dedupe's CPU at saturation). Pages are taken as they are needed.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

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

/// One file: a writer connection if this process owns it, else a reader.
struct Db {
    path: PathBuf,
    writer: Option<Mutex<Connection>>,
    reader: Option<Mutex<Connection>>,
    /// Applies waiting for the next group commit (see [`Db::apply_grouped`]).
    queue: Mutex<Vec<GroupJob>>,
    /// Transactions committed, for the `relaxed` profile's syncer.
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
    durability: Durability,
    /// [`Durability::Deferred`]: tickets of the syncs asked for, and (held
    /// while a sync runs) the tickets the last fsync covers (see
    /// [`Db::sync`]).
    sync_tickets: std::sync::atomic::AtomicU64,
    synced: Mutex<u64>,
    /// The fsyncs [`Db::sync`] made.
    fsyncs: std::sync::atomic::AtomicU64,
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
                Durability::Relaxed | Durability::Normal | Durability::Deferred => "NORMAL",
            };
            init.pragma_update(None, "synchronous", sync)
                .map_err(backend)?;
            // Checkpoints are the WAL keeper's (see [`CHECKPOINT_EVERY`]).
            init.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_BACKSTOP_PAGES)
                .map_err(backend)?;
            init.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
                .map_err(backend)?;
            init.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            Some(Mutex::new(init))
        } else {
            drop(init);
            None
        };
        // The owner reads through its writer (see [`Db::reading`]).
        let reader = match writer {
            Some(_) => None,
            None => {
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
                Some(Mutex::new(reader))
            }
        };
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        if writer.is_some() {
            spawn_wal_keeper(path, durability, std::sync::Arc::downgrade(&commits));
        }
        Ok(Db {
            path: path.to_path_buf(),
            writer,
            reader,
            queue: Mutex::new(Vec::new()),
            commits,
            durability,
            sync_tickets: std::sync::atomic::AtomicU64::new(0),
            synced: Mutex::new(0),
            fsyncs: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether this process writes the file and its commits wait for
    /// [`Db::sync`] to be durable.
    fn sync_deferred(&self) -> bool {
        self.durability == Durability::Deferred && self.writer.is_some()
    }

    /// [`Durability::Deferred`]: make every commit in the file so far
    /// durable, this process's or not: a replica that took a partition over
    /// may find an event committed by the owner that died before its sync,
    /// and must not answer or ack it before an fsync. Each caller takes a
    /// ticket; an fsync covers every ticket taken before it started, so the
    /// callers that ask while one runs share the next. Other durabilities:
    /// nothing to do.
    fn sync(&self) -> StoreResult<()> {
        if !self.sync_deferred() {
            return Ok(());
        }
        let ticket = self
            .sync_tickets
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced > ticket {
            return Ok(());
        }
        let covering = self.sync_tickets.load(std::sync::atomic::Ordering::Acquire);
        // Opened each time: an fsync through a handle of a WAL that was
        // since deleted and made again would sync nothing that matters.
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        std::fs::File::open(&wal)
            .and_then(|file| file.sync_data())
            .map_err(|e| StoreError::Backend(format!("fsync {}: {e}", wal.display())))?;
        *synced = covering;
        self.fsyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("im_store_deferred_syncs_total").increment(1);
        Ok(())
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

    /// The connection reads go through: the owner's writer, or the reader.
    ///
    /// A connection discards its whole page cache whenever it starts a read
    /// and finds that another connection changed the file. The owner's
    /// separate reader did so after every commit of its own writer and read
    /// every page again with `pread` (8 % of unread's CPU, 6 % of dedupe's
    /// at 1,000 msg/s: docs/BENCHMARKS.md); the writer's cache stays valid
    /// across its own commits.
    fn reading(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.writer
            .as_ref()
            .or(self.reader.as_ref())
            .expect("a store opens a writer or a reader")
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        f(&self.reading()).map_err(backend)
    }

    /// A read whose closure maps its own errors (it may decode as well).
    fn read_with<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        f(&self.reading())
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

#[cfg(test)]
mod tests;
