//! Replicas share the work (issue 14): live replicas of a function split
//! its partitions evenly, hand them over when one joins, and take a dead
//! one's share within the lease TTL, while messages keep arriving exactly
//! once and in order.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use im_pipeline_tests::Pipeline;
use im_store::UserStore;

/// Who holds each of unread's partitions now.
async fn owners(pipeline: &Pipeline, partitions: u32) -> HashMap<u32, String> {
    let bucket = pipeline
        .js
        .get_key_value(im_events::subjects::LEASE_BUCKET)
        .await
        .unwrap();
    let mut owners = HashMap::new();
    for partition in 0..partitions {
        if let Ok(Some(value)) = bucket.get(format!("unread.{partition}")).await {
            owners.insert(partition, String::from_utf8_lossy(&value).into_owned());
        }
    }
    owners
}

/// Ten messages, one in each of ten direct conversations.
async fn round(pipeline: &Pipeline, n: usize) {
    for i in 0..10 {
        let id = format!("r{n}-{i}");
        pipeline
            .send_text(&format!("dm:u{i}:v{i}"), &format!("u{i}"), &id, &id)
            .await;
    }
}

fn shares(owners: &HashMap<u32, String>) -> HashMap<String, usize> {
    let mut shares = HashMap::new();
    for owner in owners.values() {
        *shares.entry(owner.clone()).or_default() += 1;
    }
    shares
}

/// Wait until unread's partitions are held as `expected` (instance → count).
async fn wait_shares(
    pipeline: &Pipeline,
    partitions: u32,
    expected: &[(&str, usize)],
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    let want: HashMap<String, usize> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    loop {
        let now = owners(pipeline, partitions).await;
        if now.len() == partitions as usize && shares(&now) == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "after {timeout:?} unread's partitions are held as {:?}, not {want:?}",
            shares(&now)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_partitions_hand_them_over_and_take_a_dead_ones_share() {
    let mut pipeline = Pipeline::start().await;
    let partitions = im_runtime::topology::topology().partitions.user;
    assert!(
        partitions >= 2 && partitions.is_multiple_of(2),
        "{partitions}"
    );
    let half = partitions as usize / 2;
    round(&pipeline, 0).await;
    // A second replica joins: the first hands it half.
    pipeline.spawn("unread", "unread-2");
    let joined = wait_shares(
        &pipeline,
        partitions,
        &[("unread", half), ("unread-2", half)],
        Duration::from_secs(30),
    )
    .await;
    round(&pipeline, 1).await;
    // SIGKILL one: the survivor takes its share within the TTL and a margin.
    pipeline.process("unread-2").kill9();
    let failover = wait_shares(
        &pipeline,
        partitions,
        &[("unread", partitions as usize)],
        Duration::from_secs(15),
    )
    .await;
    round(&pipeline, 2).await;
    // It comes back: they share again.
    pipeline.process("unread-2").spawn().unwrap();
    let rejoined = wait_shares(
        &pipeline,
        partitions,
        &[("unread", half), ("unread-2", half)],
        Duration::from_secs(30),
    )
    .await;
    round(&pipeline, 3).await;
    pipeline.settle(Duration::from_secs(60)).await;
    eprintln!("shared after {joined:?}, failover {failover:?}, shared again after {rejoined:?}");
    // Every message once, in order, with exact unread.
    let users = pipeline.users();
    for i in 0..10 {
        let recipient = format!("v{i}");
        let conversation = format!("dm:u{i}:v{i}");
        let row = users
            .user_conversation(&recipient, &conversation)
            .unwrap()
            .unwrap();
        assert_eq!((row.last_seq, row.unread()), (4, 4), "{recipient}");
        let seqs: Vec<u64> = users
            .sync_items(&recipient, 0, 100)
            .unwrap()
            .iter()
            .filter(|r| r.item["type"] == "message")
            .map(|r| r.item["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4], "{recipient}");
    }
}
