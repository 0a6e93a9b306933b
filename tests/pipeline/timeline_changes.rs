//! Membership changes, mute, edit and recall: applied to the stored message,
//! passed on to members, never changing unread counts; refused when not
//! allowed.

use std::time::Duration;

use im_pipeline_tests::Pipeline;
use im_store::{ConversationStore, UserStore};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_recalls_members_and_mutes() {
    // A 3 s recall window so that "after the window" needs only a short wait.
    let pipeline = Pipeline::start_with(vec![("IM_RECALL_WINDOW_SECS".into(), "3".into())]).await;
    let members: Vec<String> = ["ann", "ben", "cat"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    pipeline.create_group("g:team", &members).await; // ann is the admin
    let publish = |kind: &'static str, id: &'static str, data: serde_json::Value| {
        let pipeline = &pipeline;
        async move { pipeline.publish(kind, "urn:test", id, data, true).await }
    };
    // Everything within the window is published back to back: the window is
    // measured between the events' arrival times.
    pipeline.send_text("g:team", "ben", "t1", "first").await;
    pipeline.send_text("g:team", "cat", "t2", "second").await;
    // Ben edits his message; Cat may not edit Ben's.
    publish("im.message.edit", "e1", json!({"conversation_id": "g:team", "seq": 1, "editor_id": "ben", "body": {"text": "first (edited)"}})).await;
    publish("im.message.edit", "e2", json!({"conversation_id": "g:team", "seq": 1, "editor_id": "cat", "body": {"text": "hacked"}})).await;
    // Cat recalls hers within the window.
    publish(
        "im.message.recall",
        "r1",
        json!({"conversation_id": "g:team", "seq": 2, "actor_id": "cat"}),
    )
    .await;
    pipeline.send_text("g:team", "ben", "t3", "third").await;
    pipeline.settle(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // Past the window: Ben may not recall his; the admin may.
    publish(
        "im.message.recall",
        "r2",
        json!({"conversation_id": "g:team", "seq": 3, "actor_id": "ben"}),
    )
    .await;
    publish(
        "im.message.recall",
        "r3",
        json!({"conversation_id": "g:team", "seq": 1, "actor_id": "ann"}),
    )
    .await;
    pipeline.settle(Duration::from_secs(30)).await;

    let conversations = pipeline.conversations();
    let history = conversations.history("g:team", None, 10).unwrap();
    assert_eq!(
        history[0].recalled_by.as_deref(),
        Some("ann"),
        "admin recall after the window"
    );
    assert!(history[0].edited_at.is_some());
    assert_eq!(history[1].recalled_by.as_deref(), Some("cat"));
    assert_eq!(history[1].body, json!({}));
    assert_eq!(
        history[2].recalled_at, None,
        "sender recall after the window is refused"
    );
    assert_eq!(history[2].body, json!({"text": "third"}));

    let letters = pipeline.dead_letters().await;
    let codes: Vec<&str> = letters
        .iter()
        .map(|(h, _)| h["Im-Dlq-Code"].as_str())
        .collect();
    assert_eq!(
        codes,
        vec!["forbidden", "recall_window_expired"],
        "{letters:?}"
    );

    // Edits and recalls reach every member's sync log and change no count:
    // unread is what the three messages alone make it.
    let users = pipeline.users();
    for (member, expected) in members.iter().zip([3, 0, 1]) {
        let row = users.user_conversation(member, "g:team").unwrap().unwrap();
        assert_eq!(row.unread(), expected, "{member}");
        let types: Vec<String> = users
            .sync_items(member, 0, 100)
            .unwrap()
            .iter()
            .map(|r| {
                serde_json::to_value(&r.item).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            types,
            vec!["message", "message", "edit", "recall", "message", "recall"],
            "{member}"
        );
    }

    // Membership: dan joins and sees only what follows; cat leaves.
    publish(
        "im.conversation.members.add",
        "add-dan",
        json!({"conversation_id": "g:team", "members": ["dan"]}),
    )
    .await;
    publish(
        "im.conversation.members.remove",
        "rm-cat",
        json!({"conversation_id": "g:team", "members": ["cat"]}),
    )
    .await;
    publish(
        "im.user.mute",
        "mute-ann",
        json!({"conversation_id": "g:team", "user_id": "ann", "until": "2099-01-01T00:00:00Z"}),
    )
    .await;
    pipeline
        .send_text("g:team", "ann", "t4", "welcome dan")
        .await;
    pipeline
        .send_text("g:team", "cat", "t5", "am I still here?")
        .await;
    pipeline.settle(Duration::from_secs(30)).await;
    let dan = users.user_conversation("dan", "g:team").unwrap().unwrap();
    assert_eq!((dan.joined_seq, dan.last_seq, dan.unread()), (3, 4, 1));
    assert_eq!(users.user_conversation("cat", "g:team").unwrap(), None);
    assert_eq!(
        conversations.members_at("g:team", 4).unwrap(),
        vec!["ann", "ben", "dan"]
    );
    assert_eq!(
        conversations.members_at("g:team", 2).unwrap(),
        vec!["ann", "ben", "cat"]
    );
    let ann = users.user_conversation("ann", "g:team").unwrap().unwrap();
    assert_eq!(
        ann.muted_until_ms,
        im_events::parse_rfc3339_ms("2099-01-01T00:00:00Z")
    );
    let codes: Vec<String> = pipeline
        .dead_letters()
        .await
        .iter()
        .map(|(h, _)| h["Im-Dlq-Code"].clone())
        .collect();
    assert_eq!(
        codes.last().map(String::as_str),
        Some("not_member"),
        "a removed member cannot post"
    );
}
