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
/// (With fewer partitions than replicas, as ingest's one, the others
/// stand by: those that hold one hold one each.)
fn even(shares: &HashMap<String, usize>, replicas: &[String], partitions: u32) -> bool {
    let k = replicas.len();
    let (low, high) = (partitions as usize / k, (partitions as usize).div_ceil(k));
    shares.len() == k.min(partitions as usize)
        && shares.keys().all(|holder| replicas.contains(holder))
        && shares.values().all(|n| (low.max(1)..=high).contains(n))
        && shares.values().sum::<usize>() == partitions as usize
}

/// How many partitions `function` has: ingest reads the unkeyed events
/// through one; the others have the deployment's count.
fn partitions_of(function: &str) -> u32 {
    let topology = im_runtime::topology::topology();
    topology
        .consumer(function)
        .map_or(topology.partitions.user, |def| {
            topology.partition_count(def)
        })
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
        let partitions = partitions.min(partitions_of(function));
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
    for function in SCALED {
        let partitions = partitions_of(function);
        let (low, high) = (partitions as usize / 3, (partitions as usize).div_ceil(3));
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

/// The release before this one read IM_INGEST through ingest's partition
/// consumers (`ingest-p<p>-e<epoch>`; partition 0 also read the unkeyed
/// events). Upgraded in place: dedupe's partition p starts exactly after
/// ingest's p's ack floor, ingest's one unkeyed consumer after partition
/// 0's, the earlier consumers are deleted, and each successor gets only
/// what came after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_releases_ingest_consumers_hand_their_places_over() {
    use futures::StreamExt;
    use im_events::partition::nats_partition;
    use im_events::subjects::{hex, keyed_ingest_subject};
    use im_runtime::topology::{
        ensure_streams_with, migrate_predecessors, take_over_consumer, topology, MaxBytes,
    };
    let nats = im_harness::NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let partitions = topology().partitions.conversation;
    ensure_streams_with(&js, 1, partitions, &MaxBytes::default())
        .await
        .unwrap();
    // Two conversations in two partitions other than 0.
    let mut conversations = (0..1000).map(|i| format!("g:upgrade-{i}")).filter(|id| {
        let partition = nats_partition(&hex(id), partitions);
        partition != 0
    });
    let a = conversations.next().unwrap();
    let pa = nats_partition(&hex(&a), partitions);
    let b = conversations
        .find(|id| nats_partition(&hex(id), partitions) != pa)
        .unwrap();
    let pb = nats_partition(&hex(&b), partitions);
    let publish = |subject: String, payload: &'static str| {
        let js = js.clone();
        async move {
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };
    publish("im.ingest.message.send".into(), "u1").await;
    publish(keyed_ingest_subject("im.message.send", &a), "a1").await;
    publish(keyed_ingest_subject("im.message.send", &b), "b1").await;
    // The earlier release's consumers, which handled everything so far.
    let stream = js.get_stream("IM_INGEST").await.unwrap();
    let legacy = |name: &str, filters: Vec<String>| {
        let stream = stream.clone();
        let name = name.to_string();
        async move {
            stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(name),
                    filter_subjects: filters,
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let fetch = |consumer: async_nats::jetstream::consumer::PullConsumer, max: usize| async move {
        let mut got = Vec::new();
        for message in im_pipeline_tests::fetch_batch(&consumer, max).await {
            message.double_ack().await.unwrap();
            got.push(String::from_utf8_lossy(&message.payload).into_owned());
        }
        got
    };
    let zero = legacy(
        "ingest-p0-e7",
        vec!["im.keyed.0.>".into(), "im.ingest.>".into()],
    )
    .await;
    assert_eq!(fetch(zero, 10).await, ["u1"]);
    for (partition, handled) in [(pa, "a1"), (pb, "b1")] {
        let consumer = legacy(
            &format!("ingest-p{partition}-e7"),
            vec![format!("im.keyed.{partition}.>")],
        )
        .await;
        assert_eq!(fetch(consumer, 10).await, [handled]);
    }
    // What came while the earlier release was stopping.
    publish("im.ingest.message.send".into(), "u2").await;
    publish(keyed_ingest_subject("im.message.send", &a), "a2").await;
    publish(keyed_ingest_subject("im.message.send", &b), "b2").await;
    // The upgrade, twice (every starting process runs it).
    migrate_predecessors(&js).await.unwrap();
    migrate_predecessors(&js).await.unwrap();
    let mut names: Vec<String> = stream
        .consumer_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    names.sort();
    let mut expected = vec![
        "dedupe-p0".to_string(),
        format!("dedupe-p{pa}"),
        format!("dedupe-p{pb}"),
        "ingest-unkeyed".to_string(),
    ];
    expected.sort();
    assert_eq!(names, expected, "the earlier consumers are gone");
    // Each successor, taken over by an owner, gets only what came after.
    let dedupe = topology().consumer("dedupe").unwrap();
    let ingest = topology().consumer("ingest").unwrap();
    let owner = take_over_consumer(&js, ingest, 0, 1).await.unwrap();
    assert_eq!(fetch(owner, 10).await, ["u2"]);
    for (partition, after) in [(pa, "a2"), (pb, "b2")] {
        let owner = take_over_consumer(&js, dedupe, partition, 1).await.unwrap();
        assert_eq!(fetch(owner, 10).await, [after], "partition {partition}");
    }
    let owner = take_over_consumer(&js, dedupe, 0, 1).await.unwrap();
    assert!(fetch(owner, 10).await.is_empty());
    // Nothing can be written where keyed events are stored but through the
    // transform: no stream listens there.
    let direct = js
        .publish(format!("im.keyed.{pa}.00.message.send"), "x".into())
        .await
        .unwrap()
        .await;
    assert!(direct.is_err(), "{direct:?}");
}

/// What the release before this one accepted into IM_ACCEPTED but had not
/// applied when it stopped is applied first, before anything newer of the
/// same conversation read from IM_INGEST (a send published after its
/// group's create, which sits unapplied in IM_ACCEPTED, must not be
/// refused as not_member); then the retired consumers are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_earlier_release_accepted_but_did_not_apply_is_applied_first() {
    use im_events::partition::partition_of;
    use im_runtime::topology::{stream_config_with, topology, MaxBytes, StreamDef};
    use serde_json::json;
    let mut pipeline = Pipeline::start().await;
    pipeline.process("dedupe").stop(Duration::from_secs(5));
    let partitions = topology().partitions.conversation;
    // IM_ACCEPTED as the earlier release made it, with its dedupe's
    // consumer of the group's partition, and two events ingest accepted.
    let old = StreamDef {
        name: "IM_ACCEPTED".into(),
        subjects: vec!["im.accepted.>".into()],
        max_age_secs: 2_592_000,
        max_bytes: None,
        duplicate_window_secs: 120,
        republish: None,
        keyed: false,
        partition_subjects: Some("im.accepted.{p}.>".into()),
        shard_0_also: Vec::new(),
        shards: 1,
        description: "an earlier release's".into(),
    };
    pipeline
        .js
        .create_stream(stream_config_with(
            &old,
            1,
            partitions,
            &MaxBytes::default(),
        ))
        .await
        .unwrap();
    let group = "g:retired";
    let q = partition_of(group, partitions);
    let accepted = pipeline.js.get_stream("IM_ACCEPTED").await.unwrap();
    accepted
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(format!("dedupe-p{q}-e3")),
            filter_subject: format!("im.accepted.{q}.>"),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let stamped = |id: &str, event_type: &str, data: serde_json::Value| {
        json!({"event": {"specversion": "1.0", "id": id, "source": "urn:old", "type": event_type,
            "time": "2026-01-01T00:00:00.000Z", "imreceived": "2026-01-01T00:00:00.000Z",
            "datacontenttype": "application/json", "data": data}})
    };
    let batch = json!({"events": [
        stamped("old-create", "im.conversation.create", json!({"conversation_id": group, "kind": "group", "members": ["ann", "ben"]})),
        stamped("old-send", "im.message.send", json!({"conversation_id": group, "sender_id": "ann", "kind": "text", "body": {"text": "accepted before the upgrade"}})),
    ]});
    pipeline
        .publish_raw(
            &format!("im.accepted.{q}.batch"),
            Default::default(),
            serde_json::to_vec(&batch).unwrap(),
        )
        .await;
    // Newer, in IM_INGEST: a send after the create.
    pipeline
        .send_text(group, "ben", "new-send", "after the upgrade")
        .await;
    pipeline.process("dedupe").spawn().unwrap();
    pipeline.settle(Duration::from_secs(60)).await;
    let ids: Vec<String> = pipeline
        .conversations()
        .history(group, None, 10)
        .unwrap()
        .iter()
        .map(|m| m.event_id.clone())
        .collect();
    assert_eq!(ids, ["old-send", "new-send"]);
    let letters = pipeline.dead_letters().await;
    assert!(letters.is_empty(), "{letters:?}");
    let left =
        im_runtime::consumer::retired::retired_consumer_names(&pipeline.js, "IM_ACCEPTED").await;
    assert!(left.is_empty(), "{left:?}");
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
