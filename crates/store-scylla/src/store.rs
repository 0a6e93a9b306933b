//! The ScyllaDB backend of every store trait.
//!
//! The traits are synchronous (the embedded backend blocks); this backend
//! runs the async driver on a runtime of its own and waits for it, so it
//! can be called from the blocking pool and from async code alike.
//!
//! Writes are ordered so that a crash at any point leaves a state the
//! redelivered batch repairs (every function redelivers what it did not
//! ack): each `apply` first validates (the epoch fence and the
//! `(conversation_id, seq)` claims are lightweight transactions, conflicts
//! are found before anything is written), then writes, with batches only
//! within one partition. What a multi-partition write cannot be is isolated:
//! a reader may see part of a batch before the rest lands.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use im_store::{
    ArchiveReport, ConversationEffect, ConversationRecord, ConversationStore, Fence,
    IdempotencyRecord, Membership, NotificationRecord, NotificationStatus, NotificationStore,
    NotifyEffect, NotifyState, Reaction, Receipt, Role, StoreError, StoreResult, StoredMessage,
    SyncRecord, TierStats, TieringPolicy, UserConversation, UserEffect, UserStore,
};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::SerialConsistency;
use scylla::value::{CqlValue, Row};

use crate::buckets::{
    buckets_below, index_shard, message_bucket, sync_bucket, sync_buckets,
    CONVERSATION_INDEX_SHARDS,
};
use crate::config::ScyllaConfig;
use crate::errors::map_error;
use crate::rows::*;

/// Every statement the backend prepares, by name; `{ks}` is the keyspace.
pub const STATEMENTS: &[(&str, &str)] = &[
    ("fence_read", "SELECT epoch FROM {ks}.fences WHERE scope = ? AND partition = ?"),
    ("fence_create", "INSERT INTO {ks}.fences (scope, partition, epoch) VALUES (?, ?, ?) IF NOT EXISTS"),
    ("fence_raise", "UPDATE {ks}.fences SET epoch = ? WHERE scope = ? AND partition = ? IF epoch <= ?"),
    ("conversation", "SELECT conversation_id, kind, title, last_seq, diffusion, member_count, created_at, history_visibility FROM {ks}.conversations WHERE conversation_id = ?"),
    ("conversation_put", "INSERT INTO {ks}.conversations (conversation_id, kind, title, last_seq, diffusion, member_count, created_at, history_visibility) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
    ("conversation_archived", "SELECT archived_seq FROM {ks}.conversations WHERE conversation_id = ?"),
    ("conversation_archived_set", "UPDATE {ks}.conversations SET archived_seq = ? WHERE conversation_id = ?"),
    ("index_put", "INSERT INTO {ks}.conversation_index (shard, conversation_id, kind) VALUES (?, ?, ?)"),
    ("index_shard", "SELECT conversation_id, kind FROM {ks}.conversation_index WHERE shard = ?"),
    ("members", "SELECT user_id, added_after_seq, role, removed_after_seq FROM {ks}.members WHERE conversation_id = ?"),
    ("member", "SELECT added_after_seq, role, removed_after_seq FROM {ks}.members WHERE conversation_id = ? AND user_id = ?"),
    ("member_add", "INSERT INTO {ks}.members (conversation_id, user_id, added_after_seq, role, removed_after_seq) VALUES (?, ?, ?, ?, null)"),
    ("member_remove", "UPDATE {ks}.members SET removed_after_seq = ? WHERE conversation_id = ? AND user_id = ? AND added_after_seq = ?"),
    ("seq_claim", "INSERT INTO {ks}.seq_claims (conversation_id, bucket, seq, message_id) VALUES (?, ?, ?, ?) IF NOT EXISTS"),
    ("seq_claimed", "SELECT message_id FROM {ks}.seq_claims WHERE conversation_id = ? AND bucket = ? AND seq = ?"),
    ("message_head", "SELECT max_seq FROM {ks}.message_heads WHERE conversation_id = ?"),
    ("message_head_put", "INSERT INTO {ks}.message_heads (conversation_id, max_seq) VALUES (?, ?)"),
    ("hot_put", "INSERT INTO {ks}.messages (conversation_id, bucket, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
    ("hot_get", "SELECT conversation_id, bucket, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to FROM {ks}.messages WHERE conversation_id = ? AND bucket = ? AND seq = ?"),
    ("hot_page", "SELECT conversation_id, bucket, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to FROM {ks}.messages WHERE conversation_id = ? AND bucket = ? AND seq < ? LIMIT ?"),
    ("hot_ascending", "SELECT conversation_id, bucket, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to FROM {ks}.messages WHERE conversation_id = ? AND bucket = ? AND seq > ? ORDER BY seq ASC LIMIT ?"),
    ("hot_edit", "UPDATE {ks}.messages SET body = ?, edited_at = ? WHERE conversation_id = ? AND bucket = ? AND seq = ?"),
    ("hot_recall", "UPDATE {ks}.messages SET body = '{}', recalled_at = ?, recalled_by = ? WHERE conversation_id = ? AND bucket = ? AND seq = ?"),
    ("cold_put", "INSERT INTO {ks}.messages_cold (conversation_id, bucket, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"),
    ("cold_get", "SELECT conversation_id, bucket, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to FROM {ks}.messages_cold WHERE conversation_id = ? AND bucket = ? AND seq = ?"),
    ("cold_page", "SELECT conversation_id, bucket, seq, message_id, sender_id, source, event_id, sent_at, kind, body, mentions, edited_at, recalled_at, recalled_by, reply_to FROM {ks}.messages_cold WHERE conversation_id = ? AND bucket = ? AND seq < ? LIMIT ?"),
    ("cold_edit", "UPDATE {ks}.messages_cold SET body = ?, edited_at = ? WHERE conversation_id = ? AND bucket = ? AND seq = ?"),
    ("cold_recall", "UPDATE {ks}.messages_cold SET body = '{}', recalled_at = ?, recalled_by = ? WHERE conversation_id = ? AND bucket = ? AND seq = ?"),
    ("idempotency", "SELECT conversation_id, seq, message_id, outputs, recorded_at_ms, fingerprint FROM {ks}.idempotency WHERE source = ? AND event_id = ?"),
    ("idempotency_put", "INSERT INTO {ks}.idempotency (source, event_id, conversation_id, seq, message_id, outputs, recorded_at_ms, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"),
    ("user_conversation", "SELECT user_id, conversation_id, last_seq, read_seq, joined_seq, diffusion, muted_until_ms, last_message FROM {ks}.user_conversations WHERE user_id = ? AND conversation_id = ?"),
    ("user_conversations", "SELECT user_id, conversation_id, last_seq, read_seq, joined_seq, diffusion, muted_until_ms, last_message FROM {ks}.user_conversations WHERE user_id = ?"),
    ("user_conversation_put", "INSERT INTO {ks}.user_conversations (user_id, conversation_id, last_seq, read_seq, joined_seq, diffusion, muted_until_ms, last_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
    ("user_conversation_delete", "DELETE FROM {ks}.user_conversations WHERE user_id = ? AND conversation_id = ?"),
    ("user_head", "SELECT last_sync_seq FROM {ks}.user_conversations WHERE user_id = ? LIMIT 1"),
    ("user_head_set", "UPDATE {ks}.user_conversations SET last_sync_seq = ? WHERE user_id = ?"),
    ("sync_get", "SELECT user_id, sync_seq, event_key, item FROM {ks}.user_sync WHERE user_id = ? AND bucket = ? AND sync_seq = ?"),
    ("sync_put", "INSERT INTO {ks}.user_sync (user_id, bucket, sync_seq, event_key, item) VALUES (?, ?, ?, ?, ?)"),
    ("sync_page", "SELECT user_id, sync_seq, event_key, item FROM {ks}.user_sync WHERE user_id = ? AND bucket = ? AND sync_seq > ? AND sync_seq <= ? LIMIT ?"),
    ("effect", "SELECT event_key FROM {ks}.user_effects WHERE user_id = ? AND event_key = ?"),
    ("effect_put", "INSERT INTO {ks}.user_effects (user_id, event_key) VALUES (?, ?)"),
    ("notify_state", "SELECT user_id, conversation_id, partition, counted_seq, pending, first_seq, last_seq, mentioned, due_ms, last_message FROM {ks}.notify_state WHERE user_id = ? AND conversation_id = ?"),
    ("notify_state_put", "INSERT INTO {ks}.notify_state (user_id, conversation_id, partition, counted_seq, pending, first_seq, last_seq, mentioned, due_ms, last_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
    ("notify_due", "SELECT due_ms, user_id, conversation_id FROM {ks}.notify_due WHERE partition = ? AND due_ms <= ? LIMIT ?"),
    ("notify_due_first", "SELECT due_ms FROM {ks}.notify_due WHERE partition = ? LIMIT 1"),
    ("notify_due_put", "INSERT INTO {ks}.notify_due (partition, due_ms, user_id, conversation_id) VALUES (?, ?, ?, ?)"),
    ("notify_due_delete", "DELETE FROM {ks}.notify_due WHERE partition = ? AND due_ms = ? AND user_id = ? AND conversation_id = ?"),
    ("notification", "SELECT id, user_id, device_id, provider, partition, conversation_id, payload, status, attempts, next_attempt_ms, created_ms, updated_ms, answer FROM {ks}.notifications WHERE id = ?"),
    ("notification_put", "INSERT INTO {ks}.notifications (id, user_id, device_id, provider, partition, conversation_id, payload, status, attempts, next_attempt_ms, created_ms, updated_ms, answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"),
    ("notification_settle", "UPDATE {ks}.notifications SET status = ?, attempts = ?, next_attempt_ms = ?, answer = ?, updated_ms = ? WHERE id = ?"),
    ("ready", "SELECT next_attempt_ms, id FROM {ks}.notifications_ready WHERE partition = ? AND next_attempt_ms <= ? LIMIT ?"),
    ("ready_first", "SELECT next_attempt_ms FROM {ks}.notifications_ready WHERE partition = ? LIMIT 1"),
    ("ready_put", "INSERT INTO {ks}.notifications_ready (partition, next_attempt_ms, id) VALUES (?, ?, ?)"),
    ("ready_delete", "DELETE FROM {ks}.notifications_ready WHERE partition = ? AND next_attempt_ms = ? AND id = ?"),
    ("log_user", "SELECT id FROM {ks}.notifications_by_user WHERE user_id = ? LIMIT ?"),
    ("log_user_put", "INSERT INTO {ks}.notifications_by_user (user_id, created_ms, id) VALUES (?, ?, ?)"),
    ("log_day", "SELECT id FROM {ks}.notifications_by_day WHERE day = ? LIMIT ?"),
    ("log_days", "SELECT day FROM {ks}.notification_days WHERE shard = 0"),
    ("log_days_put", "INSERT INTO {ks}.notification_days (shard, day) VALUES (0, ?)"),
    ("log_day_put", "INSERT INTO {ks}.notifications_by_day (day, created_ms, id) VALUES (?, ?, ?)"),
    ("dump_conversations", "SELECT conversation_id, kind, title, last_seq, diffusion, member_count, created_at, history_visibility FROM {ks}.conversations"),
    ("dump_members", "SELECT conversation_id, user_id, role, added_after_seq, removed_after_seq FROM {ks}.members"),
    ("dump_idempotency", "SELECT source, event_id, conversation_id, seq, message_id, outputs FROM {ks}.idempotency"),
    ("dump_user_conversations", "SELECT user_id, conversation_id, last_seq, read_seq, joined_seq, diffusion, muted_until_ms, last_message FROM {ks}.user_conversations"),
    ("sync_floor", "SELECT floor FROM {ks}.user_sync_floor WHERE user_id = ?"),
    ("sync_floor_put", "INSERT INTO {ks}.user_sync_floor (user_id, floor) VALUES (?, ?)"),
    ("effect_delete", "DELETE FROM {ks}.user_effects WHERE user_id = ? AND event_key = ?"),
    ("sync_compact", "DELETE FROM {ks}.user_sync WHERE user_id = ? AND bucket = ? AND sync_seq <= ?"),
    ("dump_sync", "SELECT user_id, sync_seq, event_key, item FROM {ks}.user_sync"),
    ("dump_effects", "SELECT user_id, event_key FROM {ks}.user_effects"),
    ("dump_notify_state", "SELECT user_id, conversation_id, partition, counted_seq, pending, first_seq, last_seq, mentioned, due_ms, last_message FROM {ks}.notify_state"),
    ("dump_notifications", "SELECT id, user_id, device_id, provider, conversation_id, payload, status FROM {ks}.notifications"),
    ("reaction_put", "INSERT INTO {ks}.reactions (conversation_id, bucket, seq, emoji, user_id) VALUES (?, ?, ?, ?, ?)"),
    ("reaction_delete", "DELETE FROM {ks}.reactions WHERE conversation_id = ? AND bucket = ? AND seq = ? AND emoji = ? AND user_id = ?"),
    ("reactions", "SELECT seq, emoji, user_id FROM {ks}.reactions WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ?"),
    ("block_put", "INSERT INTO {ks}.blocks (user_id, blocked_user_id) VALUES (?, ?)"),
    ("block_delete", "DELETE FROM {ks}.blocks WHERE user_id = ? AND blocked_user_id = ?"),
    ("block", "SELECT blocked_user_id FROM {ks}.blocks WHERE user_id = ? AND blocked_user_id = ?"),
    ("receipts", "SELECT user_id, read_seq, delivered_seq FROM {ks}.receipts WHERE conversation_id = ?"),
    ("receipt", "SELECT read_seq, delivered_seq FROM {ks}.receipts WHERE conversation_id = ? AND user_id = ?"),
    ("receipt_put", "INSERT INTO {ks}.receipts (conversation_id, user_id, read_seq, delivered_seq) VALUES (?, ?, ?, ?)"),
    ("dump_reactions", "SELECT conversation_id, seq, emoji, user_id FROM {ks}.reactions"),
    ("dump_blocks", "SELECT user_id, blocked_user_id FROM {ks}.blocks"),
    ("dump_receipts", "SELECT conversation_id, user_id, read_seq, delivered_seq FROM {ks}.receipts"),
    ("size_estimates", "SELECT table_name, partitions_count, mean_partition_size FROM system.size_estimates WHERE keyspace_name = ?"),
];

type IdempotencyRow = (
    String,
    Option<i64>,
    Option<String>,
    String,
    i64,
    Option<String>,
);
type IdempotencyDumpRow = (String, String, String, Option<i64>, Option<String>, String);
/// A user_conversations row read with its static head: the clustering
/// columns are null in the row that only carries the head.
type WideUserRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
);
type Statements<'a> = Vec<(&'a str, Values)>;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("im-scylla")
            .enable_all()
            .build()
            .expect("the ScyllaDB driver's runtime starts")
    })
}

/// Run `work` on the driver's runtime and wait for it, from any thread.
fn block<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime().spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv().expect("the ScyllaDB driver's runtime is running")
}

struct Inner {
    session: Session,
    config: ScyllaConfig,
    statements: HashMap<&'static str, PreparedStatement>,
}

/// One connection to a ScyllaDB cluster serving every store trait.
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

/// The statement text for a keyspace.
pub fn statement_text(template: &str, keyspace: &str) -> String {
    template.replace("{ks}", keyspace)
}

impl ScyllaStore {
    /// Connect with token-aware, datacenter-aware routing and prepare every
    /// statement. The schema must exist (`imctl schema apply`).
    pub fn connect(config: ScyllaConfig) -> StoreResult<Self> {
        block(async move {
            let session = Self::session(&config).await?;
            let mut statements = HashMap::new();
            for (name, template) in STATEMENTS {
                let mut prepared = session
                    .prepare(statement_text(template, &config.keyspace))
                    .await
                    .map_err(|e| map_error(&format!("prepare {name}"), e))?;
                prepared.set_consistency(config.consistency);
                prepared.set_serial_consistency(Some(SerialConsistency::LocalSerial));
                prepared.set_page_size(1000);
                statements.insert(*name, prepared);
            }
            Ok(ScyllaStore {
                inner: Arc::new(Inner {
                    session,
                    config,
                    statements,
                }),
            })
        })
    }

    async fn session(config: &ScyllaConfig) -> StoreResult<Session> {
        let mut policy = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = &config.datacenter {
            policy = policy
                .prefer_datacenter(dc.clone())
                .permit_dc_failover(false);
        }
        let profile = ExecutionProfile::builder()
            .consistency(config.consistency)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .load_balancing_policy(policy.build())
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.hosts)
            .default_execution_profile_handle(profile.into_handle());
        if let Some(login) = &config.login {
            builder = builder.user(login.user.clone(), login.password.clone());
        }
        if let Some(tls) = &config.tls {
            let client = tls.client_config().map_err(StoreError::Backend)?;
            builder = builder.tls_context(Some(Arc::new(client)));
        }
        builder
            .build()
            .await
            .map_err(|e| map_error(&format!("connect to {}", config.hosts.join(",")), e))
    }

    /// Create the keyspace and tables (idempotent); returns the statements run.
    pub fn apply_schema(config: &ScyllaConfig) -> StoreResult<Vec<String>> {
        let config = config.clone();
        block(async move {
            let session = Self::session(&config).await?;
            let statements = crate::schema::statements(&config);
            for statement in &statements {
                session
                    .query_unpaged(statement.as_str(), ())
                    .await
                    .map_err(|e| map_error("apply schema", e))?;
            }
            for migration in crate::schema::migrations(&config) {
                if let Err(error) = session.query_unpaged(migration.as_str(), ()).await {
                    if !crate::schema::already_applied(&error.to_string()) {
                        return Err(map_error("upgrade schema", error));
                    }
                }
            }
            session
                .await_schema_agreement()
                .await
                .map_err(|e| map_error("schema agreement", e))?;
            Ok(statements)
        })
    }

    fn run<T: Send + 'static, F>(&self, work: impl FnOnce(Arc<Inner>) -> F) -> StoreResult<T>
    where
        F: Future<Output = StoreResult<T>> + Send + 'static,
    {
        block(work(self.inner.clone()))
    }
}

impl Inner {
    fn statement(&self, name: &str) -> &PreparedStatement {
        self.statements
            .get(name)
            .unwrap_or_else(|| panic!("statement {name} is prepared at connect"))
    }

    async fn exec(
        &self,
        name: &str,
        values: Values,
    ) -> StoreResult<scylla::response::query_result::QueryResult> {
        self.session
            .execute_unpaged(self.statement(name), values)
            .await
            .map_err(|e| map_error(name, e))
    }

    async fn select<R>(&self, name: &str, values: Values) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.exec(name, values).await?;
        let rows = result.into_rows_result().map_err(|e| map_error(name, e))?;
        let typed = rows.rows::<R>().map_err(|e| map_error(name, e))?;
        typed
            .collect::<Result<Vec<R>, _>>()
            .map_err(|e| map_error(name, e))
    }

    async fn one<R>(&self, name: &str, values: Values) -> StoreResult<Option<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        Ok(self.select(name, values).await?.into_iter().next())
    }

    /// Every row of a (paged) full scan.
    async fn scan<R>(&self, name: &str, values: Values) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + Send + 'static,
    {
        let pager = self
            .session
            .execute_iter(self.statement(name).clone(), values)
            .await
            .map_err(|e| map_error(name, e))?;
        pager
            .rows_stream::<R>()
            .map_err(|e| map_error(name, e))?
            .try_collect()
            .await
            .map_err(|e| map_error(name, e))
    }

    /// A lightweight transaction: whether it applied, and the row as it is.
    async fn lwt(&self, name: &str, values: Values) -> StoreResult<(bool, Row)> {
        let result = self.exec(name, values).await?;
        let rows = result.into_rows_result().map_err(|e| map_error(name, e))?;
        let row: Row = rows
            .maybe_first_row::<Row>()
            .map_err(|e| map_error(name, e))?
            .ok_or_else(|| StoreError::Backend(format!("{name}: no [applied] row")))?;
        let applied = matches!(row.columns.first(), Some(Some(CqlValue::Boolean(true))));
        Ok((applied, row))
    }

    /// Statements of one partition in one unlogged batch.
    async fn batch(&self, statements: Vec<(&str, Values)>) -> StoreResult<()> {
        if statements.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_consistency(self.config.consistency);
        let mut values = Vec::with_capacity(statements.len());
        for (name, bound) in statements {
            batch.append_statement(self.statement(name).clone());
            values.push(bound);
        }
        self.session
            .batch(&batch, values)
            .await
            .map(|_| ())
            .map_err(|e| map_error("batch", e))
    }

    /// Refuse an epoch older than the newest seen for the partition, and
    /// raise it (a compare-and-set, so two owners cannot both pass).
    async fn check_fence(&self, fence: &Fence) -> StoreResult<()> {
        // Raise first (the common case: one Paxos round); create the row
        // if the partition has none yet; a racing creator means raise again.
        for _ in 0..2 {
            let (raised, row) = self
                .lwt(
                    "fence_raise",
                    vec![
                        big(fence.epoch),
                        text(&fence.scope),
                        int(fence.partition),
                        big(fence.epoch),
                    ],
                )
                .await?;
            if raised {
                return Ok(());
            }
            let current = row.columns.iter().skip(1).find_map(|c| match c {
                Some(CqlValue::BigInt(epoch)) => Some(*epoch as u64),
                _ => None,
            });
            if let Some(current) = current {
                return Err(StoreError::Fenced {
                    scope: fence.scope.clone(),
                    partition: fence.partition,
                    current,
                    attempted: fence.epoch,
                });
            }
            let (created, _) = self
                .lwt(
                    "fence_create",
                    vec![text(&fence.scope), int(fence.partition), big(fence.epoch)],
                )
                .await?;
            if created {
                return Ok(());
            }
        }
        Err(StoreError::Backend(format!(
            "fence of {} partition {} is contended; retrying",
            fence.scope, fence.partition
        )))
    }

    async fn message(&self, conversation_id: &str, seq: u64) -> StoreResult<Option<StoredMessage>> {
        let key = vec![text(conversation_id), big(message_bucket(seq)), big(seq)];
        for name in ["hot_get", "cold_get"] {
            if let Some(row) = self.one::<MessageRow>(name, key.clone()).await? {
                return message_from_row(row).map(Some);
            }
        }
        Ok(None)
    }

    async fn members(
        &self,
        conversation_id: &str,
    ) -> StoreResult<Vec<(String, i64, String, Option<i64>)>> {
        self.select("members", vec![text(conversation_id)]).await
    }
}

fn sorted_unique(mut users: Vec<String>) -> Vec<String> {
    users.sort();
    users.dedup();
    users
}

impl ConversationStore for ScyllaStore {
    fn conversation(&self, conversation_id: &str) -> StoreResult<Option<ConversationRecord>> {
        let id = conversation_id.to_string();
        self.run(|db| async move {
            db.one::<ConversationRow>("conversation", vec![text(id)])
                .await?
                .map(conversation_from_row)
                .transpose()
        })
    }

    fn memberships(&self, conversation_id: &str, users: &[String]) -> StoreResult<Vec<Membership>> {
        let (id, users) = (conversation_id.to_string(), users.to_vec());
        self.run(|db| async move {
            let mut found = Vec::new();
            for user in users {
                let rows: Vec<(i64, String, Option<i64>)> =
                    db.select("member", vec![text(&id), text(&user)]).await?;
                if let Some((joined_seq, role, _)) =
                    rows.into_iter().find(|(_, _, removed)| removed.is_none())
                {
                    found.push(Membership {
                        user_id: user,
                        role: Role::parse(&role),
                        joined_seq: joined_seq as u64,
                    });
                }
            }
            Ok(found)
        })
    }

    fn members_at(&self, conversation_id: &str, seq: u64) -> StoreResult<Vec<String>> {
        let id = conversation_id.to_string();
        self.run(move |db| async move {
            let seq = seq as i64;
            let rows = db.members(&id).await?;
            Ok(sorted_unique(
                rows.into_iter()
                    .filter(|(_, added, _, removed)| {
                        *added < seq && removed.is_none_or(|r| r >= seq)
                    })
                    .map(|(user, ..)| user)
                    .collect(),
            ))
        })
    }

    fn current_members(&self, conversation_id: &str) -> StoreResult<Vec<String>> {
        let id = conversation_id.to_string();
        self.run(|db| async move {
            let rows = db.members(&id).await?;
            Ok(sorted_unique(
                rows.into_iter()
                    .filter(|(.., removed)| removed.is_none())
                    .map(|(user, ..)| user)
                    .collect(),
            ))
        })
    }

    fn idempotency(&self, source: &str, event_id: &str) -> StoreResult<Option<IdempotencyRecord>> {
        let (source, event_id) = (source.to_string(), event_id.to_string());
        self.run(|db| async move {
            let row: Option<IdempotencyRow> = db
                .one("idempotency", vec![text(&source), text(&event_id)])
                .await?;
            row.map(
                |(conversation_id, seq, message_id, outputs, recorded_at_ms, fingerprint)| {
                    Ok(IdempotencyRecord {
                        source: source.clone(),
                        event_id: event_id.clone(),
                        conversation_id,
                        seq: seq.map(|s| s as u64),
                        message_id,
                        outputs: serde_json::from_str(&outputs)
                            .map_err(|e| StoreError::Backend(format!("stored outputs: {e}")))?,
                        recorded_at_ms,
                        fingerprint: fingerprint.unwrap_or_default(),
                    })
                },
            )
            .transpose()
        })
    }

    fn message(&self, conversation_id: &str, seq: u64) -> StoreResult<Option<StoredMessage>> {
        let id = conversation_id.to_string();
        self.run(move |db| async move { db.message(&id, seq).await })
    }

    fn history(
        &self,
        conversation_id: &str,
        before_seq: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        let id = conversation_id.to_string();
        self.run(move |db| async move { history(&db, &id, before_seq, limit).await })
    }

    fn reactions(
        &self,
        conversation_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> StoreResult<Vec<Reaction>> {
        let id = conversation_id.to_string();
        self.run(move |db| async move {
            let mut found = Vec::new();
            if from_seq > to_seq {
                return Ok(found);
            }
            for bucket in message_bucket(from_seq)..=message_bucket(to_seq) {
                let rows: Vec<(i64, String, String)> = db
                    .select(
                        "reactions",
                        vec![text(&id), big(bucket), big(from_seq), big(to_seq)],
                    )
                    .await?;
                found.extend(rows.into_iter().map(|(seq, emoji, user_id)| Reaction {
                    conversation_id: id.clone(),
                    seq: seq as u64,
                    emoji,
                    user_id,
                }));
            }
            found.sort();
            Ok(found)
        })
    }

    fn blocked(&self, user_id: &str, blocked_user_id: &str) -> StoreResult<bool> {
        let key = vec![text(user_id), text(blocked_user_id)];
        self.run(move |db| async move { Ok(db.one::<(String,)>("block", key).await?.is_some()) })
    }

    fn receipts(&self, conversation_id: &str) -> StoreResult<Vec<Receipt>> {
        let id = conversation_id.to_string();
        self.run(move |db| async move {
            let rows: Vec<(String, i64, i64)> = db.select("receipts", vec![text(&id)]).await?;
            let mut receipts: Vec<Receipt> = rows
                .into_iter()
                .map(|(user_id, read, delivered)| Receipt {
                    user_id,
                    read_seq: read as u64,
                    delivered_seq: delivered as u64,
                })
                .collect();
            receipts.sort_by(|a, b| a.user_id.cmp(&b.user_id));
            Ok(receipts)
        })
    }

    fn receipt(&self, conversation_id: &str, user_id: &str) -> StoreResult<Option<Receipt>> {
        let (key, user) = (
            vec![text(conversation_id), text(user_id)],
            user_id.to_string(),
        );
        self.run(move |db| async move {
            Ok(db
                .one::<(i64, i64)>("receipt", key)
                .await?
                .map(|(read, delivered)| Receipt {
                    user_id: user,
                    read_seq: read as u64,
                    delivered_seq: delivered as u64,
                }))
        })
    }

    fn apply(&self, fence: &Fence, effects: &[ConversationEffect]) -> StoreResult<()> {
        let (fence, effects) = (fence.clone(), effects.to_vec());
        self.run(|db| async move {
            db.check_fence(&fence).await?;
            // Validate: claim every seq first; a conflict stops the batch
            // before anything is written (a claim by the same message is
            // that message's own, so a retry passes).
            for effect in &effects {
                if let ConversationEffect::InsertMessage(message) = effect {
                    let key = vec![
                        text(&message.conversation_id),
                        big(message_bucket(message.seq)),
                        big(message.seq),
                    ];
                    let (claimed, _) = db
                        .lwt(
                            "seq_claim",
                            [key.clone(), vec![text(&message.message_id)]].concat(),
                        )
                        .await?;
                    if !claimed {
                        let owner: Option<(String,)> = db.one("seq_claimed", key).await?;
                        if owner.map(|(id,)| id) != Some(message.message_id.clone()) {
                            return Err(StoreError::SeqConflict {
                                conversation_id: message.conversation_id.clone(),
                                seq: message.seq,
                            });
                        }
                    }
                }
            }
            for effect in &effects {
                apply_conversation_effect(&db, effect).await?;
            }
            // Where history starts: the newest seq of each conversation.
            let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
            for effect in &effects {
                if let ConversationEffect::InsertMessage(m) = effect {
                    let entry = newest.entry(m.conversation_id.as_str()).or_default();
                    *entry = (*entry).max(m.seq);
                }
            }
            for (conversation_id, seq) in newest {
                let current: Option<(i64,)> =
                    db.one("message_head", vec![text(conversation_id)]).await?;
                if current.is_none_or(|(max,)| (max as u64) < seq) {
                    db.exec("message_head_put", vec![text(conversation_id), big(seq)])
                        .await?;
                }
            }
            Ok(())
        })
    }

    fn dump(&self) -> StoreResult<Vec<String>> {
        self.run(|db| async move {
            let mut lines = Vec::new();
            let mut conversations: Vec<ConversationRow> =
                db.scan("dump_conversations", vec![]).await?;
            conversations.sort_by(|a, b| a.0.cmp(&b.0));
            for (id, kind, title, last_seq, diffusion, members, created, visibility) in &conversations {
                lines.push(format!(
                    "conversation\t{id}\t{kind}\t{}\t{last_seq}\t{diffusion}\t{members}\t{created}\t{}",
                    title.clone().unwrap_or_default(),
                    visibility.as_deref().unwrap_or("joined")
                ));
            }
            let mut members: Vec<(String, String, String, i64, Option<i64>)> =
                db.scan("dump_members", vec![]).await?;
            members.sort_by(|a, b| (&a.0, &a.1, a.3).cmp(&(&b.0, &b.1, b.3)));
            for (conversation, user, role, added, removed) in members {
                lines.push(format!(
                    "member\t{conversation}\t{user}\t{role}\t{added}\t{}",
                    removed.unwrap_or(-1)
                ));
            }
            for (id, ..) in &conversations {
                let mut before = None;
                let mut all = Vec::new();
                loop {
                    let page = history(&db, id, before, 500).await?;
                    let Some(first) = page.first() else { break };
                    before = Some(first.seq);
                    all.splice(0..0, page);
                }
                lines.extend(all.iter().map(im_store::sqlite::message_line));
            }
            let mut records: Vec<IdempotencyDumpRow> = db.scan("dump_idempotency", vec![]).await?;
            records.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            for (source, event, conversation, seq, message, outputs) in records {
                lines.push(format!(
                    "idempotency\t{source}\t{event}\t{conversation}\t{}\t{}\t{outputs}",
                    seq.unwrap_or(-1),
                    message.unwrap_or_default()
                ));
            }
            let mut reactions: Vec<(String, i64, String, String)> =
                db.scan("dump_reactions", vec![]).await?;
            reactions.sort();
            for (conversation, seq, emoji, user) in reactions {
                lines.push(format!("reaction\t{conversation}\t{seq}\t{emoji}\t{user}"));
            }
            let mut blocks: Vec<(String, String)> = db.scan("dump_blocks", vec![]).await?;
            blocks.sort();
            for (user, blocked) in blocks {
                lines.push(format!("block\t{user}\t{blocked}"));
            }
            let mut receipts: Vec<(String, String, i64, i64)> =
                db.scan("dump_receipts", vec![]).await?;
            receipts.sort();
            for (conversation, user, read, delivered) in receipts {
                lines.push(format!("receipt\t{conversation}\t{user}\t{read}\t{delivered}"));
            }
            Ok(lines)
        })
    }

    fn archive(
        &self,
        policy: &TieringPolicy,
        now_ms: i64,
        progress: &mut dyn FnMut(&ArchiveReport),
    ) -> StoreResult<ArchiveReport> {
        // Hot rows expire by themselves (the table's TTL); a pass copies
        // what is past the hot window into the cold tier, with the
        // retention of its conversation kind as TTL, and remembers how far
        // it got per conversation. Copies are upserts: a pass killed midway
        // repeats some, loses none.
        let mut report = ArchiveReport::default();
        for shard in 0..CONVERSATION_INDEX_SHARDS as i32 {
            let policy = *policy;
            let conversations: Vec<(String, String)> = self.run(move |db| async move {
                db.scan("index_shard", vec![Some(CqlValue::Int(shard))])
                    .await
            })?;
            for (conversation_id, kind) in conversations {
                let moved = self.run(move |db| async move {
                    archive_conversation(&db, &conversation_id, &kind, &policy, now_ms).await
                })?;
                report.conversations += 1;
                report.moved += moved;
                report.segments += u64::from(moved > 0);
                progress(&report);
            }
        }
        Ok(report)
    }

    fn tier_stats(&self) -> StoreResult<TierStats> {
        // The cluster's own estimates (system.size_estimates); message
        // counts are not kept, so they read 0.
        self.run(|db| async move {
            let rows: Vec<(String, i64, i64)> = db
                .select("size_estimates", vec![text(&db.config.keyspace)])
                .await?;
            let mut stats = TierStats::default();
            for (table, partitions, mean) in rows {
                let bytes = (partitions.max(0) * mean.max(0)) as u64;
                match table.as_str() {
                    "messages" => stats.hot_bytes += bytes,
                    "messages_cold" => stats.cold_bytes += bytes,
                    _ => {}
                }
            }
            Ok(stats)
        })
    }
}

/// Up to `limit` messages below `before_seq`, ascending: newest first,
/// bucket by bucket, and within a bucket the hot tier wins over a cold copy
/// of the same seq.
async fn history(
    db: &Inner,
    id: &str,
    before_seq: Option<u64>,
    limit: usize,
) -> StoreResult<Vec<StoredMessage>> {
    let before = match before_seq {
        Some(before) => before,
        None => match db.one::<(i64,)>("message_head", vec![text(id)]).await? {
            Some((max,)) => max as u64 + 1,
            None => return Ok(vec![]),
        },
    };
    // Newest first, bucket by bucket; within a bucket the hot tier
    // wins over a cold copy of the same seq.
    let mut newest_first: Vec<StoredMessage> = Vec::new();
    for bucket in buckets_below(before) {
        let wanted = limit - newest_first.len();
        let key = vec![text(id), big(bucket), big(before), int(wanted as u32)];
        let mut page: BTreeMap<u64, StoredMessage> = BTreeMap::new();
        for row in db.select::<MessageRow>("hot_page", key.clone()).await? {
            let message = message_from_row(row)?;
            page.insert(message.seq, message);
        }
        if page.len() < wanted {
            for row in db.select::<MessageRow>("cold_page", key).await? {
                let message = message_from_row(row)?;
                page.entry(message.seq).or_insert(message);
            }
        }
        newest_first.extend(page.into_values().rev().take(wanted));
        if newest_first.len() >= limit {
            break;
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

async fn archive_conversation(
    db: &Inner,
    conversation_id: &str,
    kind: &str,
    policy: &TieringPolicy,
    now_ms: i64,
) -> StoreResult<u64> {
    let cutoff = im_events::rfc3339_ms(now_ms - policy.hot_window_ms);
    let retain = match kind {
        "direct" => policy.retain_direct_ms,
        _ => policy.retain_group_ms,
    };
    let ttl = retain.map(|ms| (ms / 1000).max(1)).unwrap_or(0);
    let from: Option<(Option<i64>,)> = db
        .one("conversation_archived", vec![text(conversation_id)])
        .await?;
    let mut after = from.and_then(|(seq,)| seq).unwrap_or(0) as u64;
    let mut moved = 0;
    loop {
        let rows: Vec<MessageRow> = db
            .select(
                "hot_ascending",
                vec![
                    text(conversation_id),
                    big(message_bucket(after + 1)),
                    big(after),
                    int(policy.segment_messages as u32),
                ],
            )
            .await?;
        let old: Vec<StoredMessage> = rows
            .into_iter()
            .map(message_from_row)
            .collect::<StoreResult<Vec<_>>>()?
            .into_iter()
            .take_while(|m| m.sent_at < cutoff)
            .collect();
        let Some(last) = old.last().map(|m| m.seq) else {
            // Nothing old in this bucket: maybe the next bucket starts old.
            let next_bucket_start =
                (message_bucket(after + 1) as u64 + 1) * crate::buckets::MESSAGES_PER_BUCKET;
            let probe: Vec<MessageRow> = db
                .select(
                    "hot_ascending",
                    vec![
                        text(conversation_id),
                        big(message_bucket(next_bucket_start)),
                        big(next_bucket_start - 1),
                        int(1),
                    ],
                )
                .await?;
            match probe.into_iter().next().map(message_from_row).transpose()? {
                Some(first) if first.sent_at < cutoff && first.seq > after => {
                    after = first.seq - 1;
                    continue;
                }
                _ => break,
            }
        };
        for message in &old {
            let mut values = message_values(message);
            values.push(Some(CqlValue::Int(ttl.min(i32::MAX as i64) as i32)));
            db.exec("cold_put", values).await?;
        }
        moved += old.len() as u64;
        after = last;
        db.exec(
            "conversation_archived_set",
            vec![big(after), text(conversation_id)],
        )
        .await?;
    }
    Ok(moved)
}

async fn apply_conversation_effect(db: &Inner, effect: &ConversationEffect) -> StoreResult<()> {
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
                    text(record.outputs.to_string()),
                    big(record.recorded_at_ms),
                    text(&record.fingerprint),
                ],
            )
            .await?;
        }
    }
    Ok(())
}

impl UserStore for ScyllaStore {
    fn user_conversation(
        &self,
        user_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<UserConversation>> {
        let (user, id) = (user_id.to_string(), conversation_id.to_string());
        self.run(|db| async move {
            db.one::<UserConversationRow>("user_conversation", vec![text(user), text(id)])
                .await?
                .map(user_conversation_from_row)
                .transpose()
        })
    }

    fn user_conversations(&self, user_id: &str) -> StoreResult<Vec<UserConversation>> {
        let user = user_id.to_string();
        self.run(|db| async move {
            // The static head makes a row with no conversation when the
            // user has none: skip it.
            let rows: Vec<WideUserRow> = db.select("user_conversations", vec![text(user)]).await?;
            rows.into_iter()
                .filter_map(
                    |(user, id, last, read, joined, diffusion, muted, last_message)| {
                        Some((
                            user,
                            id?,
                            last?,
                            read?,
                            joined?,
                            diffusion?,
                            muted,
                            last_message,
                        ))
                    },
                )
                .map(user_conversation_from_row)
                .collect()
        })
    }

    fn last_sync_seq(&self, user_id: &str) -> StoreResult<u64> {
        let user = user_id.to_string();
        self.run(|db| async move { head(&db, &user).await })
    }

    fn effect_applied(&self, user_id: &str, key: &str) -> StoreResult<bool> {
        let (user, key) = (user_id.to_string(), key.to_string());
        self.run(|db| async move {
            Ok(db
                .one::<(String,)>("effect", vec![text(user), text(key)])
                .await?
                .is_some())
        })
    }

    fn compact_sync(&self, user_id: &str, through: u64) -> StoreResult<u64> {
        let user = user_id.to_string();
        self.run(move |db| async move {
            let old = floor(&db, &user).await?;
            if through <= old {
                return Ok(old);
            }
            // The floor first: a reader that sees it resyncs, whether or
            // not the rows below are gone yet.
            db.exec("sync_floor_put", vec![text(&user), big(through)])
                .await?;
            for bucket in sync_buckets(old, through) {
                // The applied-event markers of the items going, first.
                for row in sync_page(&db, &user, bucket, old, through, i32::MAX as u32).await? {
                    db.exec("effect_delete", vec![text(&user), text(&row.event_key)])
                        .await?;
                }
                db.exec("sync_compact", vec![text(&user), big(bucket), big(through)])
                    .await?;
            }
            Ok(through)
        })
    }

    fn sync_floor(&self, user_id: &str) -> StoreResult<u64> {
        let user = user_id.to_string();
        self.run(|db| async move { floor(&db, &user).await })
    }

    fn sync_items(&self, user_id: &str, after: u64, limit: usize) -> StoreResult<Vec<SyncRecord>> {
        let user = user_id.to_string();
        self.run(move |db| async move {
            // Only what the head covers: items past it belong to a batch
            // that has not finished (and will be written again the same).
            let until = head(&db, &user).await?;
            let mut items = Vec::new();
            if until <= after {
                return Ok(items);
            }
            for bucket in sync_buckets(after, until) {
                let wanted = limit - items.len();
                items.extend(sync_page(&db, &user, bucket, after, until, wanted as u32).await?);
                if items.len() >= limit {
                    break;
                }
            }
            Ok(items)
        })
    }

    fn apply(&self, fence: &Fence, effects: &[UserEffect]) -> StoreResult<()> {
        let (fence, effects) = (fence.clone(), effects.to_vec());
        self.run(|db| async move {
            db.check_fence(&fence).await?;
            // Validate: a sync_seq already holding another item is a conflict.
            for effect in &effects {
                if let UserEffect::AppendSync(record) = effect {
                    let existing: Option<SyncRow> = db
                        .one(
                            "sync_get",
                            vec![
                                text(&record.user_id),
                                big(sync_bucket(record.sync_seq)),
                                big(record.sync_seq),
                            ],
                        )
                        .await?;
                    if existing.is_some_and(|row| row.2 != record.event_key) {
                        return Err(StoreError::SeqConflict {
                            conversation_id: format!("user:{}", record.user_id),
                            seq: record.sync_seq,
                        });
                    }
                }
            }
            // 1. Sync items (idempotent: a redelivered batch writes the same).
            let mut by_partition: BTreeMap<(String, i64), Statements> = BTreeMap::new();
            for effect in &effects {
                if let UserEffect::AppendSync(record) = effect {
                    by_partition
                        .entry((record.user_id.clone(), sync_bucket(record.sync_seq)))
                        .or_default()
                        .push((
                            "sync_put",
                            vec![
                                text(&record.user_id),
                                big(sync_bucket(record.sync_seq)),
                                big(record.sync_seq),
                                text(&record.event_key),
                                text(record.item.to_string()),
                            ],
                        ));
                }
            }
            for (_, statements) in by_partition {
                db.batch(statements).await?;
            }
            // 2. Per user, one single-partition batch: rows and the head.
            let mut by_user: BTreeMap<String, (Statements, u64)> = BTreeMap::new();
            for effect in &effects {
                match effect {
                    UserEffect::PutUserConversation(row) => by_user
                        .entry(row.user_id.clone())
                        .or_default()
                        .0
                        .push(("user_conversation_put", user_conversation_values(row))),
                    UserEffect::DeleteUserConversation {
                        user_id,
                        conversation_id,
                    } => by_user.entry(user_id.clone()).or_default().0.push((
                        "user_conversation_delete",
                        vec![text(user_id), text(conversation_id)],
                    )),
                    UserEffect::AppendSync(record) => {
                        let entry = by_user.entry(record.user_id.clone()).or_default();
                        entry.1 = entry.1.max(record.sync_seq);
                    }
                    UserEffect::MarkApplied { .. } => {}
                }
            }
            for (user, (mut statements, new_head)) in by_user {
                if new_head > 0 {
                    statements.push(("user_head_set", vec![big(new_head), text(&user)]));
                }
                db.batch(statements).await?;
            }
            // 3. Applied marks last: a crash before them repeats an edit or
            // recall item, never loses one.
            for effect in &effects {
                if let UserEffect::MarkApplied { user_id, key } = effect {
                    db.exec("effect_put", vec![text(user_id), text(key)])
                        .await?;
                }
            }
            Ok(())
        })
    }

    fn dump(&self) -> StoreResult<Vec<String>> {
        self.run(|db| async move {
            let mut lines = Vec::new();
            let mut rows: Vec<WideUserRow> = db.scan("dump_user_conversations", vec![]).await?;
            rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            for (user, id, last, read, joined, diffusion, muted, last_message) in rows {
                let (Some(id), Some(last), Some(read), Some(joined), Some(diffusion)) = (id, last, read, joined, diffusion) else {
                    continue;
                };
                lines.push(format!("user_conversation\t{user}\t{id}\t{last}\t{read}\t{joined}\t{diffusion}\t{}\t{}", muted.unwrap_or(-1), last_message.unwrap_or_default()));
            }
            let mut items: Vec<SyncRow> = db.scan("dump_sync", vec![]).await?;
            items.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
            let mut heads: BTreeMap<String, (i64, u64)> = BTreeMap::new();
            for (user, seq, key, item) in &items {
                lines.push(format!("sync_item\t{user}\t{key}\t{item}"));
                let entry = heads.entry(user.clone()).or_default();
                entry.0 = entry.0.max(*seq);
                entry.1 += 1;
            }
            for (user, (max, count)) in heads {
                lines.push(format!("sync_head\t{user}\t{max}\t{count}"));
            }
            let mut effects: Vec<(String, String)> = db.scan("dump_effects", vec![]).await?;
            effects.sort();
            lines.extend(effects.into_iter().map(|(user, key)| format!("effect\t{user}\t{key}")));
            Ok(lines)
        })
    }
}

/// One sync bucket's items with after < sync_seq <= until, ascending.
async fn sync_page(
    db: &Inner,
    user: &str,
    bucket: i64,
    after: u64,
    until: u64,
    limit: u32,
) -> StoreResult<Vec<SyncRecord>> {
    let rows: Vec<SyncRow> = db
        .select(
            "sync_page",
            vec![text(user), big(bucket), big(after), big(until), int(limit)],
        )
        .await?;
    Ok(rows.into_iter().map(sync_from_row).collect())
}

async fn floor(db: &Inner, user: &str) -> StoreResult<u64> {
    Ok(db
        .one::<(Option<i64>,)>("sync_floor", vec![text(user)])
        .await?
        .and_then(|(floor,)| floor)
        .unwrap_or(0)
        .max(0) as u64)
}

async fn head(db: &Inner, user: &str) -> StoreResult<u64> {
    let row: Option<(Option<i64>,)> = db.one("user_head", vec![text(user)]).await?;
    Ok(row.and_then(|(head,)| head).unwrap_or(0).max(0) as u64)
}

impl NotificationStore for ScyllaStore {
    fn notify_state(
        &self,
        user_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<NotifyState>> {
        let (user, id) = (user_id.to_string(), conversation_id.to_string());
        self.run(|db| async move {
            Ok(db
                .one::<NotifyStateRow>("notify_state", vec![text(user), text(id)])
                .await?
                .map(notify_state_from_row))
        })
    }

    fn due_states(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<NotifyState>> {
        self.run(move |db| async move {
            let due: Vec<(i64, String, String)> = db
                .select(
                    "notify_due",
                    vec![int(partition), big(now_ms), int(limit as u32)],
                )
                .await?;
            let mut states = Vec::new();
            for (due_ms, user, conversation) in due {
                let row = db
                    .one::<NotifyStateRow>("notify_state", vec![text(&user), text(&conversation)])
                    .await?;
                if let Some(state) = row.map(notify_state_from_row) {
                    if state.pending > 0 && state.due_ms == due_ms {
                        states.push(state);
                    }
                }
            }
            Ok(states)
        })
    }

    fn ready_notifications(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<NotificationRecord>> {
        self.run(move |db| async move {
            let ready: Vec<(i64, String)> = db
                .select(
                    "ready",
                    vec![int(partition), big(now_ms), int(limit as u32)],
                )
                .await?;
            let mut records = Vec::new();
            for (_, id) in ready {
                if let Some(row) = db
                    .one::<NotificationRow>("notification", vec![text(id)])
                    .await?
                {
                    let record = notification_from_row(row)?;
                    if record.status == NotificationStatus::Queued {
                        records.push(record);
                    }
                }
            }
            Ok(records)
        })
    }

    fn next_wakeup_ms(&self, partition: u32) -> StoreResult<Option<i64>> {
        self.run(move |db| async move {
            let due: Option<(i64,)> = db.one("notify_due_first", vec![int(partition)]).await?;
            let ready: Option<(i64,)> = db.one("ready_first", vec![int(partition)]).await?;
            Ok([due, ready].into_iter().flatten().map(|(t,)| t).min())
        })
    }

    fn notification(&self, id: &str) -> StoreResult<Option<NotificationRecord>> {
        let id = id.to_string();
        self.run(|db| async move {
            db.one::<NotificationRow>("notification", vec![text(id)])
                .await?
                .map(notification_from_row)
                .transpose()
        })
    }

    fn notification_log(
        &self,
        user_id: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let user = user_id.map(str::to_string);
        self.run(move |db| async move {
            let ids: Vec<(String,)> = match &user {
                Some(user) => {
                    db.select("log_user", vec![text(user), int(limit as u32)])
                        .await?
                }
                None => {
                    // Newest days first, until the limit.
                    let days: Vec<(String,)> = db.select("log_days", vec![]).await?;
                    let mut ids = Vec::new();
                    for (day,) in days {
                        ids.extend(
                            db.select::<(String,)>(
                                "log_day",
                                vec![text(day), int((limit - ids.len()) as u32)],
                            )
                            .await?,
                        );
                        if ids.len() >= limit {
                            break;
                        }
                    }
                    ids
                }
            };
            let mut records = Vec::new();
            for (id,) in ids {
                if let Some(row) = db
                    .one::<NotificationRow>("notification", vec![text(id)])
                    .await?
                {
                    records.push(notification_from_row(row)?);
                }
            }
            Ok(records)
        })
    }

    fn apply(&self, fence: &Fence, effects: &[NotifyEffect]) -> StoreResult<()> {
        let (fence, effects) = (fence.clone(), effects.to_vec());
        self.run(|db| async move {
            db.check_fence(&fence).await?;
            for effect in &effects {
                if let NotifyEffect::Settle { id, .. } = effect {
                    if db
                        .one::<NotificationRow>("notification", vec![text(id)])
                        .await?
                        .is_none()
                    {
                        return Err(StoreError::Backend(format!(
                            "notification {id} is not in the outbox"
                        )));
                    }
                }
            }
            for effect in &effects {
                match effect {
                    NotifyEffect::PutState(state) => {
                        let old: Option<NotifyStateRow> = db
                            .one(
                                "notify_state",
                                vec![text(&state.user_id), text(&state.conversation_id)],
                            )
                            .await?;
                        if let Some(old) =
                            old.map(notify_state_from_row).filter(|old| old.pending > 0)
                        {
                            db.exec(
                                "notify_due_delete",
                                vec![
                                    int(old.partition),
                                    big(old.due_ms),
                                    text(&old.user_id),
                                    text(&old.conversation_id),
                                ],
                            )
                            .await?;
                        }
                        if state.pending > 0 {
                            db.exec(
                                "notify_due_put",
                                vec![
                                    int(state.partition),
                                    big(state.due_ms),
                                    text(&state.user_id),
                                    text(&state.conversation_id),
                                ],
                            )
                            .await?;
                        }
                        db.exec("notify_state_put", notify_state_values(state))
                            .await?;
                    }
                    NotifyEffect::Enqueue(record) => {
                        let (inserted, _) = db
                            .lwt("notification_put", notification_values(record))
                            .await?;
                        if inserted {
                            if record.status == NotificationStatus::Queued {
                                db.exec(
                                    "ready_put",
                                    vec![
                                        int(record.partition),
                                        big(record.next_attempt_ms),
                                        text(&record.id),
                                    ],
                                )
                                .await?;
                            }
                            db.exec(
                                "log_user_put",
                                vec![
                                    text(&record.user_id),
                                    big(record.created_ms),
                                    text(&record.id),
                                ],
                            )
                            .await?;
                            db.exec("log_days_put", vec![text(day_of(record.created_ms))])
                                .await?;
                            db.exec(
                                "log_day_put",
                                vec![
                                    text(day_of(record.created_ms)),
                                    big(record.created_ms),
                                    text(&record.id),
                                ],
                            )
                            .await?;
                        }
                    }
                    NotifyEffect::Settle {
                        id,
                        status,
                        attempts,
                        next_attempt_ms,
                        answer,
                        updated_ms,
                    } => {
                        let Some(row) = db
                            .one::<NotificationRow>("notification", vec![text(id)])
                            .await?
                        else {
                            continue;
                        };
                        let old = notification_from_row(row)?;
                        db.exec(
                            "ready_delete",
                            vec![int(old.partition), big(old.next_attempt_ms), text(id)],
                        )
                        .await?;
                        db.exec(
                            "notification_settle",
                            vec![
                                text(status.as_str()),
                                int(*attempts),
                                big(*next_attempt_ms),
                                opt_text(answer),
                                big(*updated_ms),
                                text(id),
                            ],
                        )
                        .await?;
                        if *status == NotificationStatus::Queued {
                            db.exec(
                                "ready_put",
                                vec![int(old.partition), big(*next_attempt_ms), text(id)],
                            )
                            .await?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    fn dump(&self) -> StoreResult<Vec<String>> {
        self.run(|db| async move {
            let mut states: Vec<NotifyStateRow> = db.scan("dump_notify_state", vec![]).await?;
            states.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            let mut lines: Vec<String> = states
                .into_iter()
                .map(|(u, c, p, counted, pending, first, last, mentioned, due, message)| {
                    format!("notify_state\t{u}\t{c}\t{p}\t{counted}\t{pending}\t{first}\t{last}\t{}\t{due}\t{}", mentioned as i64, message.unwrap_or_default())
                })
                .collect();
            let mut records: Vec<(String, String, String, String, String, String, String)> =
                db.scan("dump_notifications", vec![]).await?;
            records.sort();
            lines.extend(records.into_iter().map(|(id, u, d, p, c, payload, status)| format!("notification\t{id}\t{u}\t{d}\t{p}\t{c}\t{payload}\t{status}")));
            Ok(lines)
        })
    }
}

#[cfg(test)]
mod tests;
