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

mod conversation_effects;
mod conversations;
mod notifications;
mod users;
use conversation_effects::*;

#[cfg(test)]
mod tests;
