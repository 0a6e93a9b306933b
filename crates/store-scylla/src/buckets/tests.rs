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
