//! Dead letters are redriven after a fix, once: the event applies once
//! however often it is redriven, and purge empties the dead-letter stream.

use std::process::Command;
use std::time::{Duration, Instant};

use im_pipeline_tests::Pipeline;
use serde_json::json;

fn imctl(pipeline: &Pipeline, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(im_harness::workspace_binary("imctl").unwrap())
        .envs(pipeline.env("imctl"))
        .args(args)
        .output()
        .expect("imctl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_dead_letter_is_redriven_and_applies_once() {
    let pipeline = Pipeline::start().await;
    let url = pipeline.nats_url();
    // Sent before its conversation exists: refused, dead-lettered.
    pipeline
        .publish(
            "im.message.send",
            "urn:test",
            "early-1",
            json!({"conversation_id": "g:later", "sender_id": "alice", "kind": "text", "body": {"text": "too early"}}),
            true,
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let sequence = loop {
        let (_, listing, _) = imctl(&pipeline, &["dlq", "list", "--json", "--nats-url", &url]);
        if let Some(line) = listing.lines().find(|l| l.contains("\"dedupe\"")) {
            let letter: serde_json::Value = serde_json::from_str(line).unwrap();
            break letter["sequence"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter from dedupe: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The fix: the conversation now exists.
    pipeline
        .create_group("g:later", &["alice".to_string(), "bob".to_string()])
        .await;
    pipeline.settle(Duration::from_secs(30)).await;
    let seq = sequence.to_string();
    for _ in 0..2 {
        let (ok, out, err) = imctl(
            &pipeline,
            &["dlq", "redrive", "--keep", "--nats-url", &url, &seq],
        );
        assert!(ok && out.contains("redriven 1, failed 0"), "{out}{err}");
        pipeline.settle(Duration::from_secs(30)).await;
    }
    let history = pipeline.conversations();
    let messages = im_store::ConversationStore::history(&history, "g:later", None, 10).unwrap();
    assert_eq!(
        messages.len(),
        1,
        "redriven twice, applied once: {messages:#?}"
    );
    assert_eq!(messages[0].body, json!({"text": "too early"}));
    let (ok, out, _) = imctl(&pipeline, &["dlq", "redrive", "--nats-url", &url, &seq]);
    assert!(ok && out.contains("redriven 1"), "{out}");
    let (_, listing, _) = imctl(&pipeline, &["dlq", "list", "--json", "--nats-url", &url]);
    assert!(
        !listing.contains(&format!("\"sequence\":{sequence},")),
        "redriven letters are deleted: {listing}"
    );
    pipeline
        .publish_raw(
            "im.ingest.message.send",
            async_nats::HeaderMap::new(),
            b"not json".to_vec(),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while imctl(&pipeline, &["dlq", "list", "--json", "--nats-url", &url])
        .1
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the bad event was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, _) = imctl(&pipeline, &["dlq", "purge", "--all", "--nats-url", &url]);
    assert!(ok && out.starts_with("purged "), "{out}");
    assert_eq!(
        imctl(&pipeline, &["dlq", "list", "--json", "--nats-url", &url]).1,
        ""
    );
    let (ok, _, err) = imctl(&pipeline, &["dlq", "redrive", "--nats-url", &url]);
    assert!(!ok && err.contains("--all"), "{err}");
}
