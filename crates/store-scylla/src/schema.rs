//! The CQL schema. `statements` is what `imctl schema apply` runs, in
//! order; every statement is idempotent (`IF NOT EXISTS`), so applying twice
//! changes nothing. `schemas/scylla/schema.cql` is the same text for the
//! default keyspace, kept in step by a test.

use crate::config::ScyllaConfig;

/// Retention of idempotency keys (the contract asks for at least 7 days)
/// and of the notification log.
pub const IDEMPOTENCY_TTL_SECS: i64 = 30 * 86_400;

pub fn statements(config: &ScyllaConfig) -> Vec<String> {
    let ks = &config.keyspace;
    let replication = match &config.datacenter {
        Some(dc) => format!("'{dc}': {}", config.replication_factor),
        None => format!("'replication_factor': {}", config.replication_factor),
    };
    let message_columns = "conversation_id text, bucket bigint, seq bigint, message_id text, sender_id text, \
         source text, event_id text, sent_at text, kind text, body text, mentions list<text>, \
         edited_at text, recalled_at text, recalled_by text, reply_to bigint, PRIMARY KEY ((conversation_id, bucket), seq)";
    vec![
        format!("CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', {replication}}} AND durable_writes = true"),
        // Partition ownership epochs (the fence of a stale owner).
        format!("CREATE TABLE IF NOT EXISTS {ks}.fences (scope text, partition int, epoch bigint, PRIMARY KEY ((scope, partition)))"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.conversations (conversation_id text PRIMARY KEY, kind text, title text, last_seq bigint, diffusion text, member_count bigint, created_at text, archived_seq bigint, history_visibility text)"),
        // Lets the archiver and dumps enumerate conversations shard by shard.
        format!("CREATE TABLE IF NOT EXISTS {ks}.conversation_index (shard int, conversation_id text, kind text, PRIMARY KEY ((shard), conversation_id))"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.members (conversation_id text, user_id text, added_after_seq bigint, role text, removed_after_seq bigint, PRIMARY KEY ((conversation_id), user_id, added_after_seq))"),
        // The (conversation_id, seq) fence: claimed with a lightweight
        // transaction, never expires.
        format!("CREATE TABLE IF NOT EXISTS {ks}.seq_claims (conversation_id text, bucket bigint, seq bigint, message_id text, PRIMARY KEY ((conversation_id, bucket), seq))"),
        // The newest seq stored per conversation: where history starts.
        format!("CREATE TABLE IF NOT EXISTS {ks}.message_heads (conversation_id text PRIMARY KEY, max_seq bigint)"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.messages ({message_columns}) WITH CLUSTERING ORDER BY (seq DESC) AND default_time_to_live = {} AND compaction = {{'class': 'SizeTieredCompactionStrategy'}}", config.hot_ttl_secs),
        format!("CREATE TABLE IF NOT EXISTS {ks}.messages_cold ({message_columns}) WITH CLUSTERING ORDER BY (seq DESC) AND compaction = {{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 30}} AND compression = {{'sstable_compression': 'ZstdCompressor', 'chunk_length_in_kb': 64}}"),
        // Reactions next to the messages they are on (same buckets).
        format!("CREATE TABLE IF NOT EXISTS {ks}.reactions (conversation_id text, bucket bigint, seq bigint, emoji text, user_id text, PRIMARY KEY ((conversation_id, bucket), seq, emoji, user_id))"),
        // Who blocks whom (read by dedupe for direct messages).
        format!("CREATE TABLE IF NOT EXISTS {ks}.blocks (user_id text, blocked_user_id text, PRIMARY KEY ((user_id), blocked_user_id))"),
        // Each member's read and delivered marks, per conversation.
        format!("CREATE TABLE IF NOT EXISTS {ks}.receipts (conversation_id text, user_id text, read_seq bigint, delivered_seq bigint, PRIMARY KEY ((conversation_id), user_id))"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.idempotency (source text, event_id text, conversation_id text, seq bigint, message_id text, outputs text, recorded_at_ms bigint, fingerprint text, PRIMARY KEY ((source, event_id))) WITH default_time_to_live = {}", config.keep_idempotency_secs),
        // Per user: the conversation list, with the sync head as a static
        // column, so one single-partition batch moves both.
        format!("CREATE TABLE IF NOT EXISTS {ks}.user_conversations (user_id text, conversation_id text, last_seq bigint, read_seq bigint, joined_seq bigint, diffusion text, muted_until_ms bigint, last_message text, last_sync_seq bigint STATIC, PRIMARY KEY ((user_id), conversation_id))"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.user_sync (user_id text, bucket bigint, sync_seq bigint, event_key text, item text, PRIMARY KEY ((user_id, bucket), sync_seq))"),
        // How far each user's sync log was compacted (items at or below it
        // are gone; a device below it resyncs from history).
        format!("CREATE TABLE IF NOT EXISTS {ks}.user_sync_floor (user_id text PRIMARY KEY, floor bigint)"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.user_effects (user_id text, event_key text, PRIMARY KEY ((user_id), event_key))"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.notify_state (user_id text, conversation_id text, partition int, counted_seq bigint, pending bigint, first_seq bigint, last_seq bigint, mentioned boolean, due_ms bigint, last_message text, PRIMARY KEY ((user_id), conversation_id))"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.notify_due (partition int, due_ms bigint, user_id text, conversation_id text, PRIMARY KEY ((partition), due_ms, user_id, conversation_id))"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.notifications (id text PRIMARY KEY, user_id text, device_id text, provider text, partition int, conversation_id text, payload text, status text, attempts int, next_attempt_ms bigint, created_ms bigint, updated_ms bigint, answer text) WITH default_time_to_live = {IDEMPOTENCY_TTL_SECS}"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.notifications_ready (partition int, next_attempt_ms bigint, id text, PRIMARY KEY ((partition), next_attempt_ms, id))"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.notifications_by_user (user_id text, created_ms bigint, id text, PRIMARY KEY ((user_id), created_ms, id)) WITH CLUSTERING ORDER BY (created_ms DESC, id DESC) AND default_time_to_live = {IDEMPOTENCY_TTL_SECS}"),
        // The days the log has entries for, newest first (one small partition).
        format!("CREATE TABLE IF NOT EXISTS {ks}.notification_days (shard int, day text, PRIMARY KEY ((shard), day)) WITH CLUSTERING ORDER BY (day DESC) AND default_time_to_live = {IDEMPOTENCY_TTL_SECS}"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.notifications_by_day (day text, created_ms bigint, id text, PRIMARY KEY ((day), created_ms, id)) WITH CLUSTERING ORDER BY (created_ms DESC, id DESC) AND default_time_to_live = {IDEMPOTENCY_TTL_SECS}"),
    ]
}

/// Changes to keyspaces an older version created, in order. Each adds a
/// column; ScyllaDB has no `ADD IF NOT EXISTS`, so `apply` treats "already
/// exists" as applied (a fresh keyspace has the column from `statements`).
pub fn migrations(config: &ScyllaConfig) -> Vec<String> {
    let ks = &config.keyspace;
    vec![
        // Idempotency records remember what event they are (type and actor),
        // so a reused (source, id) with other contents is a conflict.
        format!("ALTER TABLE {ks}.idempotency ADD fingerprint text"),
        // What members added later may read (absent: `joined`).
        format!("ALTER TABLE {ks}.conversations ADD history_visibility text"),
        // Idempotency keys live as long as the URI's keep_idempotency says
        // (applied on every schema apply, so changing it takes effect for
        // keys written from then on).
        format!(
            "ALTER TABLE {ks}.idempotency WITH default_time_to_live = {}",
            config.keep_idempotency_secs
        ),
        // Replies (absent: the message answers nothing).
        format!("ALTER TABLE {ks}.messages ADD reply_to bigint"),
        format!("ALTER TABLE {ks}.messages_cold ADD reply_to bigint"),
    ]
}

/// Whether a migration's error says it was applied before.
pub fn already_applied(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("already exist") || error.contains("conflicts with an existing column")
}

/// The schema as a CQL file.
pub fn cql_file(config: &ScyllaConfig) -> String {
    let mut text = String::from(
        "-- The ScyllaDB schema of the IM pipeline (keyspace `im`, RF 3). Generated by\n\
         -- crates/store-scylla/src/schema.rs; apply with `imctl schema apply --store scylla://…/im`.\n\n",
    );
    for statement in statements(config) {
        text.push_str(&statement);
        text.push_str(";\n\n");
    }
    text.push_str(
        "-- Upgrades of keyspaces made by older versions (`imctl schema apply` runs them\n\
         -- and skips those already applied; a fresh keyspace needs none):\n",
    );
    for statement in migrations(config) {
        text.push_str("-- ");
        text.push_str(&statement);
        text.push_str(";\n");
    }
    text
}

#[cfg(test)]
mod tests;
