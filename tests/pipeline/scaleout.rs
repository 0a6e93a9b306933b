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

/// `imctl status --json`, as the operator of this pipeline.
fn status(pipeline: &Pipeline) -> serde_json::Value {
    let output = std::process::Command::new(im_harness::workspace_binary("imctl").unwrap())
        .args(["status", "--json", "--nats-url", &pipeline.nats_url()])
        .envs(pipeline.env("imctl"))
        .output()
        .expect("imctl status runs");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// What `imctl status` says of unread: (instance, pid, partitions).
fn unread_replicas(status: &serde_json::Value) -> Vec<(String, Option<u64>, Vec<u64>)> {
    let unread = status["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "unread")
        .expect("unread in the status");
    unread["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["instance"].as_str().unwrap().to_string(),
                r["pid"].as_u64(),
                r["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_u64().unwrap())
                    .collect(),
            )
        })
        .collect()
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
    // The operator sees it: each replica with its pid and its share, each
    // partition once; every function listed, ingest included.
    let seen = status(&pipeline);
    let names: Vec<&str> = seen["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, im_harness::FUNCTIONS, "{seen}");
    let replicas = unread_replicas(&seen);
    assert_eq!(replicas.len(), 2, "{seen}");
    let mut all: Vec<u64> = Vec::new();
    for (instance, pid, owned) in &replicas {
        assert_eq!(owned.len(), half, "{instance}: {seen}");
        assert_eq!(
            *pid,
            pipeline.process(instance).pid().map(u64::from),
            "{instance}"
        );
        all.extend(owned);
    }
    all.sort();
    assert_eq!(all, (0..partitions as u64).collect::<Vec<_>>(), "{seen}");
    assert!(!seen["nats"].as_array().unwrap().is_empty(), "{seen}");
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
