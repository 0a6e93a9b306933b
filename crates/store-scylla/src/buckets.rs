//! Partition bucketing: no partition grows without bound. A conversation's
//! messages are split into buckets of consecutive seqs, a user's sync log
//! into buckets of consecutive sync_seqs.

/// Messages per `(conversation_id, bucket)` partition.
pub const MESSAGES_PER_BUCKET: u64 = 1000;
/// Sync items per `(user_id, bucket)` partition.
pub const SYNC_ITEMS_PER_BUCKET: u64 = 10_000;
/// Shards of the conversation index the archiver walks.
pub const CONVERSATION_INDEX_SHARDS: u32 = 64;

pub fn message_bucket(seq: u64) -> i64 {
    (seq / MESSAGES_PER_BUCKET) as i64
}

pub fn sync_bucket(sync_seq: u64) -> i64 {
    (sync_seq / SYNC_ITEMS_PER_BUCKET) as i64
}

pub fn index_shard(conversation_id: &str) -> i32 {
    (im_events::partition::fnv1a64(conversation_id.as_bytes()) % CONVERSATION_INDEX_SHARDS as u64)
        as i32
}

/// The message buckets holding seqs below `before` (exclusive), newest
/// first.
pub fn buckets_below(before: u64) -> impl Iterator<Item = i64> {
    let top = if before == 0 {
        None
    } else {
        Some(message_bucket(before - 1))
    };
    top.into_iter().flat_map(|top| (0..=top).rev())
}

/// The sync buckets holding sync_seqs in `(after, until]`, oldest first.
pub fn sync_buckets(after: u64, until: u64) -> impl Iterator<Item = i64> {
    let (from, to) = (sync_bucket(after + 1), sync_bucket(until.max(after + 1)));
    from..=to
}

#[cfg(test)]
mod tests;
