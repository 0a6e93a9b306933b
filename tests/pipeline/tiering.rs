//! History that lasts: 10,000 messages move to the cold tier with
//! `imctl archive`, which is SIGKILLed once mid-run; afterwards every message
//! reads exactly once, in order, from any starting point, and the cold tier
//! is smaller on disk than the hot tier was for the same messages.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use im_events::{ConversationKind, Diffusion, MessageKind};
use im_store::sqlite::{Durability, SqliteConversationStore};
use im_store::{ConversationEffect, ConversationRecord, ConversationStore, Fence, StoredMessage};
use serde_json::json;

const CONVERSATIONS: u64 = 20;
const PER_CONVERSATION: u64 = 500;

fn message(conversation: &str, seq: u64, sent_ms: i64) -> StoredMessage {
    StoredMessage {
        conversation_id: conversation.into(),
        seq,
        message_id: format!("{conversation}:{seq}"),
        sender_id: format!("user{}", seq % 7),
        source: "urn:im:device:user:phone".into(),
        event_id: format!("e-{conversation}-{seq}"),
        sent_at: im_events::rfc3339_ms(sent_ms + seq as i64 * 1000),
        kind: MessageKind::Text,
        body: json!({"text": format!("message number {seq} about the release plan of week {}", seq % 52)}),
        mentions: vec![],
        edited_at: None,
        recalled_at: None,
        recalled_by: None,
        reply_to: None,
        reactions: vec![],
    }
}

fn archive_command(data: &std::path::Path) -> Command {
    let mut command = Command::new(im_harness::workspace_binary("imctl").unwrap());
    command
        .args([
            "archive",
            "--hot-window",
            "60",
            "--segment-messages",
            "50",
            "--data-dir",
        ])
        .arg(data);
    command
}

#[test]
fn ten_thousand_messages_survive_a_killed_archiver_and_read_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(im_store::sqlite::CONVERSATIONS_FILE);
    let store = SqliteConversationStore::open_writer(&path, Durability::Normal).unwrap();
    let fence = Fence {
        scope: "test".into(),
        partition: 0,
        epoch: 1,
    };
    let an_hour_ago =
        chrono::Utc::now().timestamp_millis() - 3_600_000 - PER_CONVERSATION as i64 * 1000;
    let ids: Vec<String> = (0..CONVERSATIONS)
        .map(|n| format!("g:tier{n:02}"))
        .collect();
    for id in &ids {
        let mut effects = vec![ConversationEffect::PutConversation(ConversationRecord {
            conversation_id: id.clone(),
            kind: ConversationKind::Group,
            title: None,
            last_seq: PER_CONVERSATION,
            diffusion: Diffusion::Write,
            member_count: 2,
            created_at: im_events::rfc3339_ms(an_hour_ago),
            history_visibility: im_events::HistoryVisibility::Shared,
        })];
        effects.extend(
            (1..=PER_CONVERSATION)
                .map(|seq| ConversationEffect::InsertMessage(message(id, seq, an_hour_ago))),
        );
        store.apply(&fence, &effects).unwrap();
    }
    let hot = store.tier_stats().unwrap();
    assert_eq!(hot.hot_messages, CONVERSATIONS * PER_CONVERSATION);
    let before = store.dump().unwrap();

    // Kill the archiver once while it is moving.
    let mut child = archive_command(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buffer = [0u8; 256];
    while !seen.contains("archive: 3 conversations") {
        let n = stderr.read(&mut buffer).unwrap();
        assert!(
            n > 0 && Instant::now() < deadline,
            "archiver ended early: {seen}"
        );
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = store.tier_stats().unwrap();
    assert!(
        partial.cold_messages > 0 && partial.hot_messages > 0,
        "killed mid-run: {partial:?}"
    );
    assert_eq!(
        partial.cold_messages + partial.hot_messages,
        CONVERSATIONS * PER_CONVERSATION
    );

    // Run it again to the end.
    let output = archive_command(dir.path()).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("archived"), "{summary}");
    let cold = store.tier_stats().unwrap();
    assert_eq!(
        (cold.hot_messages, cold.cold_messages),
        (0, CONVERSATIONS * PER_CONVERSATION)
    );
    eprintln!(
        "tiering: hot {} bytes ({:.0} B/msg) -> cold {} bytes ({:.0} B/msg) in {} segments",
        hot.hot_bytes,
        hot.hot_bytes as f64 / hot.hot_messages as f64,
        cold.cold_bytes,
        cold.cold_bytes as f64 / cold.cold_messages as f64,
        cold.cold_segments
    );
    assert!(
        cold.cold_bytes < hot.hot_bytes,
        "cold {cold:?} is not smaller than hot {hot:?}"
    );
    assert_eq!(
        store.dump().unwrap(),
        before,
        "nothing lost, nothing duplicated, nothing changed"
    );

    // Every starting point pages back exactly, and a full walk sees each
    // message once in order.
    let reader = SqliteConversationStore::open_reader(&path).unwrap();
    for id in &ids {
        for before_seq in 1..=PER_CONVERSATION + 1 {
            let page = reader.history(id, Some(before_seq), 37).unwrap();
            let from = before_seq.saturating_sub(37).max(1);
            let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
            assert_eq!(
                seqs,
                (from..before_seq).collect::<Vec<_>>(),
                "{id} before {before_seq}"
            );
        }
        let mut walked = Vec::new();
        let mut cursor = None;
        loop {
            let page = reader.history(id, cursor, 64).unwrap();
            let Some(first) = page.first() else { break };
            cursor = Some(first.seq);
            walked.splice(0..0, page.iter().map(|m| m.seq));
        }
        assert_eq!(walked, (1..=PER_CONVERSATION).collect::<Vec<_>>(), "{id}");
    }
}

/// In the running system: dedupe's archiver moves messages past a short hot
/// window, and the gateway's history (WebSocket and HTTP) and an edit of an
/// archived message work across both tiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_system_reads_and_edits_across_tiers() {
    use im_pipeline_tests::{http, token, Device, Pipeline};
    let mut pipeline = Pipeline::start_with(vec![
        ("IM_HOT_WINDOW".into(), "2s".into()),
        ("IM_ARCHIVE_EVERY".into(), "1s".into()),
        ("IM_SEGMENT_MESSAGES".into(), "8".into()),
    ])
    .await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let members = vec!["alice".to_string(), "bob".to_string()];
    pipeline.create_group("g:tiers", &members).await;
    for n in 1..=30 {
        pipeline
            .send_text("g:tiers", "alice", &format!("t{n}"), &format!("old {n}"))
            .await;
    }
    pipeline.settle(Duration::from_secs(30)).await;
    let store = pipeline.conversations();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.tier_stats().unwrap().cold_messages < 30 {
        assert!(
            Instant::now() < deadline,
            "the archiver never moved them: {:?}",
            store.tier_stats().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pipeline
        .send_text("g:tiers", "alice", "t31", "new 31")
        .await;
    pipeline
        .publish(
            "im.message.edit",
            "urn:test",
            "edit-3",
            json!({"conversation_id": "g:tiers", "seq": 3, "editor_id": "alice", "body": {"text": "edited 3"}}),
            true,
        )
        .await;
    pipeline.settle(Duration::from_secs(30)).await;

    let mut bob = Device::connect(port, "bob", "phone").await;
    bob.send(json!({"op": "history", "conversation_id": "g:tiers", "limit": 20}))
        .await;
    let page = bob.expect("history_result", Duration::from_secs(10)).await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (12..=31).collect::<Vec<_>>(),
        "newest page spans both tiers"
    );
    let (status, body) = http(
        port,
        "GET",
        "/v1/conversations/g:tiers/messages?before_seq=12&limit=100",
        Some(&token("bob", "phone", 60)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let older: serde_json::Value = serde_json::from_str(&body).unwrap();
    let messages = older["messages"].as_array().unwrap();
    assert_eq!(
        messages
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    assert_eq!(
        messages[2]["body"]["text"], "edited 3",
        "the edit reached the archived message"
    );
    let output = Command::new(im_harness::workspace_binary("imctl").unwrap())
        .args([
            "history",
            "--conversation",
            "g:tiers",
            "--before-seq",
            "4",
            "--limit",
            "2",
            "--data-dir",
        ])
        .arg(pipeline.data_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("old 2") && text.contains("edited 3") && !text.contains("old 1"),
        "{text}"
    );
}
