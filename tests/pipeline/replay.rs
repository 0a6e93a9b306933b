//! Replay: wipe the stores, replay JetStream through the functions, and the
//! rebuilt state equals the original (a digest of every table).

use std::time::Duration;

use im_pipeline_tests::{users, Pipeline, FUNCTIONS};
use im_store::{digest, ConversationStore, UserStore};
use serde_json::json;

/// Groups, direct messages, a read mark, edits, a recall, a membership
/// change, a mute, and a malformed event.
/// `imctl replay` of `pipeline` into `into`, as its operator runs it.
pub(crate) fn replay_command(pipeline: &Pipeline, into: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(im_harness::workspace_binary("imctl").unwrap());
    command
        .envs(pipeline.env("imctl"))
        .args(["replay", "--nats-url", &pipeline.nats_url(), "--into"])
        .arg(into)
        .arg("--data-dir")
        .arg(pipeline.data_dir());
    command
}

pub(crate) async fn traffic(pipeline: &Pipeline) {
    let members = users("r", 12);
    pipeline.create_group("g:replay", &members).await;
    for n in 0..60 {
        let sender = &members[n % members.len()];
        pipeline
            .send_text(
                "g:replay",
                sender,
                &format!("rg-{n}"),
                &format!("group {n}"),
            )
            .await;
        pipeline
            .send_text(
                &im_events::ids::direct_conversation_id(sender, "zed"),
                "zed",
                &format!("rd-{n}"),
                "dm",
            )
            .await;
    }
    pipeline
        .publish(
            "im.message.read",
            "urn:test",
            "rr-1",
            json!({"conversation_id": "g:replay", "user_id": "r003", "seq": 40}),
            true,
        )
        .await;
    // Unkeyed, between keyed ones: live, ingest's partition 0 copies them
    // keyed and processes the copies in the group's order; replay must
    // too, or the group's seqs differ.
    for (n, member) in members.iter().take(6).enumerate() {
        pipeline
            .publish_unkeyed(
                "im.message.send",
                "urn:test",
                &format!("ru-{n}"),
                json!({"conversation_id": "g:replay", "sender_id": member, "kind": "text", "body": {"text": "unkeyed"}}),
            )
            .await;
        pipeline
            .send_text("g:replay", member, &format!("rk-{n}"), "keyed")
            .await;
    }
    pipeline
        .publish("im.message.edit", "urn:test", "re-1", json!({}), true)
        .await; // malformed: a dead letter
    pipeline.publish("im.message.edit", "urn:test", "re-2", json!({"conversation_id": "g:replay", "seq": 2, "editor_id": "r001", "body": {"text": "edited"}}), true).await;
    pipeline
        .publish(
            "im.message.recall",
            "urn:test",
            "rc-1",
            json!({"conversation_id": "g:replay", "seq": 3, "actor_id": "r000"}),
            true,
        )
        .await;
    pipeline
        .publish(
            "im.conversation.members.remove",
            "urn:test",
            "rm-1",
            json!({"conversation_id": "g:replay", "members": ["r011"]}),
            true,
        )
        .await;
    pipeline
        .publish(
            "im.user.mute",
            "urn:test",
            "mu-1",
            json!({"conversation_id": "g:replay", "user_id": "r002", "until": null}),
            true,
        )
        .await;
    // Issue 16's state: reactions (one taken back), a reply, receipts, and
    // a block that refuses a direct message, lifted again.
    let events = [
        (
            "im.message.react",
            "rx-1",
            json!({"conversation_id": "g:replay", "seq": 5, "user_id": "r004", "emoji": "👍"}),
        ),
        (
            "im.message.react",
            "rx-2",
            json!({"conversation_id": "g:replay", "seq": 5, "user_id": "r005", "emoji": "👍"}),
        ),
        (
            "im.message.react",
            "rx-3",
            json!({"conversation_id": "g:replay", "seq": 5, "user_id": "r005", "emoji": "👍", "remove": true}),
        ),
        (
            "im.message.react",
            "rx-4",
            json!({"conversation_id": "g:replay", "seq": 6, "user_id": "r004", "emoji": ":tada:"}),
        ),
        (
            "im.message.send",
            "ry-1",
            json!({"conversation_id": "g:replay", "sender_id": "r006", "kind": "text", "body": {"text": "re"}, "reply_to": 5}),
        ),
        (
            "im.message.delivered",
            "rv-1",
            json!({"conversation_id": "g:replay", "user_id": "r007", "seq": 50}),
        ),
        (
            "im.message.read",
            "rr-2",
            json!({"conversation_id": "g:replay", "user_id": "r007", "seq": 30}),
        ),
        (
            "im.user.block",
            "rb-1",
            json!({"user_id": "zed", "blocked_user_id": "r008"}),
        ),
        (
            "im.message.send",
            "rb-2",
            json!({"conversation_id": "dm:r008:zed", "sender_id": "r008", "kind": "text", "body": {"text": "refused"}}),
        ),
        (
            "im.user.unblock",
            "rb-3",
            json!({"user_id": "zed", "blocked_user_id": "r008"}),
        ),
        (
            "im.user.block",
            "rb-4",
            json!({"user_id": "r009", "blocked_user_id": "zed"}),
        ),
    ];
    for (event_type, id, data) in events {
        pipeline
            .publish(event_type, "urn:test", id, data, true)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiping_the_stores_and_replaying_rebuilds_the_same_state() {
    let mut pipeline = Pipeline::start().await;
    traffic(&pipeline).await;
    pipeline.settle(Duration::from_secs(60)).await;

    let original_conversations = pipeline.conversations().dump().unwrap();
    let original_users = pipeline.users().dump().unwrap();
    assert!(original_conversations.len() > 120 && original_users.len() > 100);
    // The new state is there to rebuild: one reaction each left on seqs 5
    // and 6, receipts of r007, the block still standing, the reply.
    let lines_of = |kind: &str| {
        original_conversations
            .iter()
            .filter(|line| line.starts_with(&format!("{kind}\t")))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(lines_of("reaction").len(), 2, "{:?}", lines_of("reaction"));
    assert_eq!(lines_of("block"), vec!["block\tr009\tzed".to_string()]);
    assert!(
        lines_of("receipt")
            .iter()
            .any(|l| l.contains("r007\t30\t50")),
        "{:?}",
        lines_of("receipt")
    );
    assert!(
        lines_of("message").iter().any(|l| l.ends_with("\t5")),
        "the reply"
    );
    assert!(
        !lines_of("message").iter().any(|l| l.contains("refused")),
        "the blocked message"
    );

    // Wipe: stop everything, delete the store files, the derived streams and
    // the ingest consumer; IM_INGEST is the source of truth and stays.
    pipeline.stop_functions();
    for file in [
        "dedupe.db",
        "dedupe.db-wal",
        "dedupe.db-shm",
        "unread.db",
        "unread.db-wal",
        "unread.db-shm",
    ] {
        let _ = std::fs::remove_file(pipeline.data_path(file));
    }
    for stream in ["IM_TIMELINE", "IM_DELIVERY"] {
        pipeline.js.delete_stream(stream).await.unwrap();
    }
    // Ingest and dedupe start over from the first event: their consumers
    // (named after the owners' epochs) go.
    let ingest = pipeline.js.get_stream("IM_INGEST").await.unwrap();
    let names: Vec<String> = futures::StreamExt::collect::<Vec<_>>(ingest.consumer_names())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(!names.is_empty());
    for name in names {
        ingest.delete_consumer(&name).await.unwrap();
    }
    im_runtime::topology::ensure_streams(&pipeline.js)
        .await
        .unwrap();
    for function in FUNCTIONS {
        pipeline.process(function).restart().unwrap();
    }
    pipeline.settle(Duration::from_secs(90)).await;

    let rebuilt_conversations = pipeline.conversations().dump().unwrap();
    let rebuilt_users = pipeline.users().dump().unwrap();
    assert_same(
        "conversation store",
        &original_conversations,
        &rebuilt_conversations,
    );
    assert_same("user store", &original_users, &rebuilt_users);
    assert_eq!(
        digest(&rebuilt_conversations),
        digest(&original_conversations)
    );
    assert_eq!(digest(&rebuilt_users), digest(&original_users));
}

/// Equal, or a failure that shows only the lines that differ.
fn assert_same(what: &str, original: &[String], rebuilt: &[String]) {
    if original == rebuilt {
        return;
    }
    let only_original: Vec<&String> = original
        .iter()
        .filter(|line| !rebuilt.contains(line))
        .collect();
    let only_rebuilt: Vec<&String> = rebuilt
        .iter()
        .filter(|line| !original.contains(line))
        .collect();
    panic!("{what} differs after replay\nonly before:\n{only_original:#?}\nonly after:\n{only_rebuilt:#?}");
}

/// `imctl replay` rebuilds a fresh store from IM_INGEST without touching the
/// live system; killed midway it resumes from its checkpoint, and `--verify`
/// finds the digests equal to the live store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imctl_replay_rebuilds_a_fresh_store_resumably_and_verifies() {
    use std::io::Read as _;
    use std::process::Stdio;
    let pipeline = Pipeline::start().await;
    traffic(&pipeline).await;
    pipeline.settle(Duration::from_secs(60)).await;
    let target = tempfile::tempdir().unwrap();
    let replay = |extra: &[&str]| {
        let mut command = replay_command(&pipeline, target.path());
        command.args(["--batch", "10"]).args(extra);
        command
    };
    // Kill it after the first checkpoint.
    let mut child = replay(&[])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 256];
    while !seen.contains("events (") {
        let n = stderr.read(&mut buffer).unwrap();
        assert!(n > 0, "replay ended before any progress: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // `IM_INGEST=<seq>` (one line per shard when sharded).
    let checkpoint: u64 = std::fs::read_to_string(target.path().join("replay.checkpoint"))
        .unwrap()
        .trim()
        .strip_prefix("IM_INGEST=")
        .expect("the stream's position")
        .parse()
        .unwrap();
    assert!(checkpoint >= 10, "a checkpoint was written: {checkpoint}");
    let output = replay(&["--verify"]).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("resuming after {checkpoint}"))
            || stderr.contains("resuming after"),
        "{stderr}"
    );
    assert!(stdout.contains("conversation store: identical"), "{stdout}");
    assert!(stdout.contains("user store: identical"), "{stdout}");
    // Replaying a finished replay again changes nothing.
    let again = replay(&["--verify"]).output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}
