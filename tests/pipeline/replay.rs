//! Replay: wipe the stores, replay JetStream through the functions, and the
//! rebuilt state equals the original (a digest of every table).

use std::time::Duration;

use im_pipeline_tests::{users, Pipeline, FUNCTIONS};
use im_store::{digest, ConversationStore, UserStore};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiping_the_stores_and_replaying_rebuilds_the_same_state() {
    let mut pipeline = Pipeline::start().await;
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
    pipeline.settle(Duration::from_secs(60)).await;

    let original_conversations = pipeline.conversations().dump().unwrap();
    let original_users = pipeline.users().dump().unwrap();
    assert!(original_conversations.len() > 120 && original_users.len() > 100);

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
    for stream in ["IM_ACCEPTED", "IM_TIMELINE", "IM_DELIVERY"] {
        pipeline.js.delete_stream(stream).await.unwrap();
    }
    pipeline
        .js
        .get_stream("IM_INGEST")
        .await
        .unwrap()
        .delete_consumer("ingest")
        .await
        .unwrap();
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
