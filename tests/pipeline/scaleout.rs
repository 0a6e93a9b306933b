//! Replicas share the work (issue 14): live replicas of a function split
//! its partitions evenly, hand them over when one joins, and take a dead
//! one's share within the lease TTL, while messages keep arriving exactly
//! once and in order.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use im_pipeline_tests::Pipeline;
use im_store::{ConversationStore, UserStore};

/// Who holds each of `function`'s partitions now.
async fn owners(pipeline: &Pipeline, function: &str, partitions: u32) -> HashMap<u32, String> {
    let bucket = pipeline
        .js
        .get_key_value(im_events::subjects::LEASE_BUCKET)
        .await
        .unwrap();
    let mut owners = HashMap::new();
    for partition in 0..partitions {
        if let Ok(Some(value)) = bucket.get(format!("{function}.{partition}")).await {
            owners.insert(partition, String::from_utf8_lossy(&value).into_owned());
        }
    }
    owners
}

/// Messages in each conversation per round, published back to back.
const PER_ROUND: usize = 3;

/// Three messages in each of ten direct conversations, interleaved.
async fn round(pipeline: &Pipeline, n: usize) {
    for k in 0..PER_ROUND {
        for i in 0..10 {
            let id = format!("r{n}-{i}-{k}");
            pipeline
                .send_text(&format!("dm:u{i}:v{i}"), &format!("u{i}"), &id, &id)
                .await;
        }
    }
}

fn shares(owners: &HashMap<u32, String>) -> HashMap<String, usize> {
    let mut shares = HashMap::new();
    for owner in owners.values() {
        *shares.entry(owner.clone()).or_default() += 1;
    }
    shares
}

/// Whether `shares` is an even split of `partitions` over exactly
/// `replicas`: each holds ⌊P/k⌋ or ⌈P/k⌉.
fn even(shares: &HashMap<String, usize>, replicas: &[String], partitions: u32) -> bool {
    let k = replicas.len();
    let (low, high) = (partitions as usize / k, (partitions as usize).div_ceil(k));
    shares.len() == k
        && replicas.iter().all(|replica| {
            shares
                .get(replica)
                .is_some_and(|n| (low..=high).contains(n))
        })
        && shares.values().sum::<usize>() == partitions as usize
}

/// Wait until `function`'s partitions are split evenly over `replicas`.
async fn wait_shares(
    pipeline: &Pipeline,
    function: &str,
    partitions: u32,
    replicas: &[String],
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let now = owners(pipeline, function, partitions).await;
        if now.len() == partitions as usize && even(&shares(&now), replicas, partitions) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "after {timeout:?} {function}'s partitions are held as {:?}, not evenly by {replicas:?}",
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

/// What `imctl status` says of `function`: (instance, pid, partitions).
fn replicas(status: &serde_json::Value, function: &str) -> Vec<(String, Option<u64>, Vec<u64>)> {
    let found = status["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == function)
        .expect("the function in the status");
    found["replicas"]
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

/// Every partitioned function: by conversation (ingest, dedupe, fanout)
/// and by user (unread, push, offline) — all of them.
const SCALED: [&str; 6] = im_pipeline_tests::FUNCTIONS;

/// The instance names of `count` replicas of `function`.
fn named(function: &str, count: usize) -> Vec<String> {
    (1..=count)
        .map(|n| match n {
            1 => function.to_string(),
            n => format!("{function}-{n}"),
        })
        .collect()
}

/// Wait until each of [`SCALED`] is split evenly over `replicas(function)`.
async fn wait_all(
    pipeline: &Pipeline,
    partitions: u32,
    replicas: impl Fn(&str) -> Vec<String>,
    timeout: Duration,
) -> Duration {
    let mut longest = Duration::ZERO;
    for function in SCALED {
        let replicas = replicas(function);
        longest =
            longest.max(wait_shares(pipeline, function, partitions, &replicas, timeout).await);
    }
    longest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_partitions_hand_them_over_and_take_a_dead_ones_share() {
    let mut pipeline = Pipeline::start().await;
    let partitions = im_runtime::topology::topology().partitions.user;
    assert!(partitions >= 3, "{partitions}");
    let three = |function: &str| named(function, 3);
    let survivors = |function: &str| named(function, 2);
    round(&pipeline, 0).await;
    // Two more replicas of each join: the first hands them their shares.
    for function in SCALED {
        for n in 2..=3 {
            pipeline.spawn(function, &format!("{function}-{n}"));
        }
    }
    let joined = wait_all(&pipeline, partitions, three, Duration::from_secs(60)).await;
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
    let (low, high) = (partitions as usize / 3, (partitions as usize).div_ceil(3));
    for function in SCALED {
        let replicas = replicas(&seen, function);
        assert_eq!(replicas.len(), 3, "{function}: {seen}");
        let mut all: Vec<u64> = Vec::new();
        for (instance, pid, owned) in &replicas {
            assert!((low..=high).contains(&owned.len()), "{instance}: {seen}");
            assert_eq!(
                *pid,
                pipeline.process(instance).pid().map(u64::from),
                "{instance}"
            );
            all.extend(owned);
        }
        all.sort();
        assert_eq!(all, (0..partitions as u64).collect::<Vec<_>>(), "{seen}");
    }
    assert!(!seen["nats"].as_array().unwrap().is_empty(), "{seen}");
    // SIGKILL the third of each: the survivors take its share within the
    // TTL and a margin.
    for function in SCALED {
        pipeline.process(&format!("{function}-3")).kill9();
    }
    let failover = wait_all(&pipeline, partitions, survivors, Duration::from_secs(20)).await;
    round(&pipeline, 2).await;
    // It comes back: the shares even out again.
    for function in SCALED {
        pipeline.process(&format!("{function}-3")).spawn().unwrap();
    }
    let rejoined = wait_all(&pipeline, partitions, three, Duration::from_secs(60)).await;
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
        let total = 4 * PER_ROUND as u64;
        assert_eq!((row.last_seq, row.unread()), (total, total), "{recipient}");
        let seqs: Vec<u64> = users
            .sync_items(&recipient, 0, 100)
            .unwrap()
            .iter()
            .filter(|r| serde_json::to_value(&r.item).unwrap()["type"] == "message")
            .map(|r| {
                serde_json::to_value(&r.item).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "{recipient}");
        // In the order they were published, across every hand-over.
        let texts: Vec<String> = pipeline
            .conversations()
            .history(&conversation, None, 100)
            .unwrap()
            .iter()
            .map(|m| m.event_id.clone())
            .collect();
        let sent: Vec<String> = (0..4)
            .flat_map(|n| (0..PER_ROUND).map(move |k| format!("r{n}-{i}-{k}")))
            .collect();
        assert_eq!(texts, sent, "{conversation}");
    }
}

/// Ingest before it was partitioned read IM_INGEST through one consumer
/// (`ingest`, later `ingest-e<epoch>`). Upgraded in place: the stream gains
/// its keyed transform, partition 0 (the unkeyed reader) starts exactly
/// after the old consumer's ack floor and fences it off, and keyed events
/// reach their own partition only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_from_before_partitioning_hands_its_place_to_partition_zero() {
    use futures::StreamExt;
    use im_runtime::topology::{
        ensure_streams_with, stream_config_with, take_over_consumer, topology, MaxBytes,
    };
    let nats = im_harness::NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let partitions = topology().partitions.conversation;
    // The stream and consumer as the earlier release made them.
    let mut old = topology()
        .streams
        .iter()
        .find(|d| d.name == "IM_INGEST")
        .unwrap()
        .clone();
    old.keyed = false;
    js.create_stream(stream_config_with(
        &old,
        1,
        partitions,
        &MaxBytes::default(),
    ))
    .await
    .unwrap();
    for n in 1..=6 {
        js.publish("im.ingest.message.send", format!("{n}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let stream = js.get_stream("IM_INGEST").await.unwrap();
    let legacy = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("ingest-e41".into()),
            filter_subject: "im.ingest.>".into(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let fetch = |consumer: async_nats::jetstream::consumer::PullConsumer, max: usize| async move {
        let mut got = Vec::new();
        for message in im_pipeline_tests::fetch_batch(&consumer, max).await {
            message.double_ack().await.unwrap();
            got.push((
                message.subject.to_string(),
                String::from_utf8_lossy(&message.payload).into_owned(),
            ));
        }
        got
    };
    assert_eq!(
        fetch(legacy, 4).await.len(),
        4,
        "the old ingest handled 1-4"
    );
    // The upgrade.
    ensure_streams_with(&js, 1, partitions, &MaxBytes::default())
        .await
        .unwrap();
    // A keyed event, and where the stream put it.
    let keyed = im_events::subjects::keyed_ingest_subject("im.message.send", "g:upgrade");
    let seq = js
        .publish(keyed, "keyed".into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let stored = stream
        .get_raw_message(seq)
        .await
        .unwrap()
        .subject
        .to_string();
    let partition: u32 = stored
        .strip_prefix("im.keyed.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("stored as {stored}"));
    assert!(partition < partitions, "{stored}");
    // The server's hash is the one ingest checks stored partitions with.
    let hex = im_events::subjects::hex("g:upgrade");
    assert_eq!(
        partition,
        im_events::partition::nats_partition(&hex, partitions),
        "{stored}"
    );
    let def = topology().consumer("ingest").unwrap();
    let zero = take_over_consumer(&js, def, 0, 1).await.unwrap();
    let mut expected: Vec<(String, String)> = (5..=6)
        .map(|n| ("im.ingest.message.send".to_string(), n.to_string()))
        .collect();
    if partition == 0 {
        expected.push((stored.clone(), "keyed".into()));
    }
    assert_eq!(
        fetch(zero, 10).await,
        expected,
        "partition 0 after the old floor"
    );
    let names: Vec<String> = stream
        .consumer_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    assert_eq!(names, ["ingest-p0-e1"], "the old consumer is fenced off");
    if partition != 0 {
        let own = take_over_consumer(&js, def, partition, 1).await.unwrap();
        assert_eq!(fetch(own, 10).await, [(stored, "keyed".to_string())]);
    }
    // Nothing can be written where keyed events are stored but through the
    // transform: no stream listens there.
    let direct = js
        .publish(format!("im.keyed.{partition}.00.message.send"), "x".into())
        .await
        .unwrap()
        .await;
    assert!(direct.is_err(), "{direct:?}");
}

/// A publisher that keys its create (as the gateway and imctl do) and then
/// sends unkeyed, waiting only for the create's publish ack: the sends
/// must follow the create. Ingest's partition 0 reads unkeyed events; were
/// it to process them where it reads them, they would race the create in
/// its own partition and be refused as not_member. It copies them keyed
/// instead, and they are processed after the create, in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_sends_after_a_keyed_create_follow_it() {
    use im_events::partition::partition_of;
    use serde_json::json;
    let mut pipeline = Pipeline::start().await;
    let partitions = im_runtime::topology::topology().partitions.conversation;
    // Ingest down while they are published, so that every partition has
    // its backlog when it comes back and they all run at once.
    pipeline.process("ingest").stop(Duration::from_secs(5));
    let groups: Vec<String> = (0..200)
        .map(|i| format!("g:race-{i}"))
        .filter(|id| partition_of(id, partitions) != 0)
        .take(24)
        .collect();
    for group in &groups {
        pipeline
            .create_group(group, &["a".to_string(), "b".to_string()])
            .await;
        for n in 0..3 {
            pipeline
                .publish_unkeyed(
                    "im.message.send",
                    "urn:test",
                    &format!("{group}-{n}"),
                    json!({"conversation_id": group, "sender_id": "a", "kind": "text", "body": {"text": format!("{n}")}}),
                )
                .await;
        }
    }
    pipeline.process("ingest").spawn().unwrap();
    pipeline.settle(Duration::from_secs(60)).await;
    let refused: Vec<String> = pipeline
        .dead_letters()
        .await
        .into_iter()
        .map(|(headers, _)| format!("{headers:?}"))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    let conversations = pipeline.conversations();
    for group in &groups {
        let ids: Vec<String> = conversations
            .history(group, None, 10)
            .unwrap()
            .iter()
            .map(|m| m.event_id.clone())
            .collect();
        let sent: Vec<String> = (0..3).map(|n| format!("{group}-{n}")).collect();
        assert_eq!(ids, sent, "{group}");
    }
}
