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
mod tests {
    use super::*;

    #[test]
    fn buckets_split_consecutive_ranges() {
        assert_eq!(message_bucket(1), 0);
        assert_eq!(message_bucket(999), 0);
        assert_eq!(message_bucket(1000), 1);
        assert_eq!(message_bucket(2_500), 2);
        assert_eq!(sync_bucket(9_999), 0);
        assert_eq!(sync_bucket(10_000), 1);
    }

    #[test]
    fn history_walks_buckets_down_from_the_page() {
        assert_eq!(buckets_below(1).collect::<Vec<_>>(), vec![0]);
        assert_eq!(buckets_below(1001).collect::<Vec<_>>(), vec![1, 0]);
        assert_eq!(buckets_below(1000).collect::<Vec<_>>(), vec![0]);
        assert_eq!(buckets_below(0).count(), 0);
        assert_eq!(
            buckets_below(u64::MAX).next(),
            Some(message_bucket(u64::MAX - 1))
        );
    }

    #[test]
    fn sync_reads_span_the_buckets_between_cursors() {
        assert_eq!(sync_buckets(0, 100).collect::<Vec<_>>(), vec![0]);
        assert_eq!(sync_buckets(9_999, 10_050).collect::<Vec<_>>(), vec![1]);
        assert_eq!(sync_buckets(9_990, 10_050).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(sync_buckets(5, 5).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn index_shards_are_stable_and_in_range() {
        let shard = index_shard("g:team");
        assert_eq!(shard, index_shard("g:team"));
        assert!((0..CONVERSATION_INDEX_SHARDS as i32).contains(&shard));
    }
}
