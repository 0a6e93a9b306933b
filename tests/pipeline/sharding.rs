//! Sharded streams (issue 14): with `IM_STREAM_SHARDS`, a stage's
//! partitions are spread over several streams, so that their leaders can
//! sit on different NATS nodes. Everything still arrives once, in order,
//! and replays to the same state.

use std::time::Duration;

use im_pipeline_tests::{stream_info, Pipeline};
use im_runtime::topology::{ensure_streams_with, topology, MaxBytes};
use im_store::ConversationStore;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_carry_the_pipeline_and_replay_to_the_same_state() {
    let pipeline = Pipeline::start_on(im_harness::System::builder().shards(3)).await;
    let partitions = topology().partitions.conversation;
    // Each partitioned stream is three, each shard holding its partitions.
    let streams = pipeline.pipeline_streams().await;
    for base in ["IM_INGEST", "IM_TIMELINE", "IM_DELIVERY"] {
        for shard in 0..3u32 {
            let name = format!("{base}_S{shard}");
            assert!(streams.contains(&name), "{name} in {streams:?}");
            let info = stream_info(&pipeline.js, &name).await;
            let expected: Vec<u32> = (0..partitions).filter(|p| p % 3 == shard).collect();
            let held: Vec<u32> = info
                .config
                .subjects
                .iter()
                .filter_map(|s| s.split('.').nth(2)?.parse().ok())
                .collect();
            assert_eq!(held, expected, "{name}: {:?}", info.config.subjects);
            assert!(info.config.subject_transform.is_none(), "{name}");
        }
    }
    assert!(!streams.contains(&"IM_ACCEPTED".to_string()), "{streams:?}");
    // Traffic of every kind, unkeyed sends among them.
    crate::replay::traffic(&pipeline).await;
    pipeline.settle(Duration::from_secs(60)).await;
    let group = pipeline
        .conversations()
        .history("g:replay", None, 200)
        .unwrap();
    assert!(group.len() >= 60, "{} messages", group.len());
    // Keyed events went to the shard of their partition.
    let mut keyed = 0;
    for shard in 0..3u32 {
        let info = stream_info(&pipeline.js, &format!("IM_INGEST_S{shard}")).await;
        keyed += info.state.messages;
    }
    assert!(keyed > 100, "{keyed}");
    // A keyed event published straight into another partition's subject
    // (the publishers may: the mapping needs it) is refused with the reason.
    let subject = im_events::subjects::keyed_ingest_subject("im.message.send", "g:replay");
    let hex = subject.split('.').nth(3).unwrap().to_string();
    let right = im_events::partition::nats_partition(&hex, partitions);
    let wrong = format!("im.keyed.{}.{hex}.message.send", (right + 1) % partitions);
    let event = json!({"specversion": "1.0", "id": "misplaced", "source": "urn:test", "type": "im.message.send",
        "data": {"conversation_id": "g:replay", "sender_id": "r000", "kind": "text", "body": {"text": "misplaced"}}});
    pipeline
        .publish_raw(
            &wrong,
            Default::default(),
            serde_json::to_vec(&event).unwrap(),
        )
        .await;
    pipeline.settle(Duration::from_secs(60)).await;
    let letters = pipeline.dead_letters().await;
    assert!(
        letters
            .iter()
            .any(|(headers, _)| headers.values().any(|v| v.contains("belongs to partition"))),
        "{letters:?}"
    );
    // A process configured unsharded is refused.
    let refused = ensure_streams_with(&pipeline.js, 1, partitions, &MaxBytes::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("IM_STREAM_SHARDS=3"), "{refused}");
    // Replay reads the three IM_INGEST shards merged, and gets the same.
    let target = tempfile::tempdir().unwrap();
    let output = crate::replay::replay_command(&pipeline, target.path())
        .arg("--verify")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("conversation store: identical"), "{stdout}");
    assert!(stdout.contains("user store: identical"), "{stdout}");
    let checkpoint = std::fs::read_to_string(target.path().join("replay.checkpoint")).unwrap();
    assert_eq!(checkpoint.lines().count(), 3, "{checkpoint}");
}

/// In a cluster, shard s of every stage is led by node s: the stages'
/// leaders (their writes, fsyncs and CPU) spread over the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_each_shard_is_led_by_its_own_node() {
    let system = im_harness::System::builder()
        .cluster(3)
        .shards(3)
        .functions(&[])
        .gateways(0)
        .start()
        .await
        .expect("a sharded cluster starts");
    let js = system.js().await.unwrap();
    for base in ["IM_INGEST", "IM_TIMELINE", "IM_DELIVERY"] {
        let mut leaders = Vec::new();
        for shard in 0..3 {
            let info = stream_info(&js, &format!("{base}_S{shard}")).await;
            assert_eq!(info.config.num_replicas, 3);
            leaders.push(info.cluster.and_then(|c| c.leader).unwrap_or_default());
        }
        assert_eq!(leaders, ["im-1", "im-2", "im-3"], "{base}");
    }
}
