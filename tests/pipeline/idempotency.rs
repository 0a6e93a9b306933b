//! The same event (source, id) published five times, including after
//! JetStream's duplicate window: one message, one seq, unread counted once.

use std::time::Duration;

use async_nats::HeaderMap;
use im_events::subjects::keyed_ingest_subject;
use im_pipeline_tests::Pipeline;
use im_store::{ConversationStore, UserStore};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_published_five_times_is_one_message() {
    let pipeline = Pipeline::start().await;
    let data = json!({"conversation_id": "dm:ann:ben", "sender_id": "ann", "kind": "text", "body": {"text": "once"}});
    // 1, 2: quick retries with Nats-Msg-Id: JetStream drops the second.
    pipeline
        .publish("im.message.send", "urn:phone", "evt-1", data.clone(), true)
        .await;
    pipeline
        .publish("im.message.send", "urn:phone", "evt-1", data.clone(), true)
        .await;
    // 3, 4: without Nats-Msg-Id, as after the duplicate window: both reach ingest.
    pipeline
        .publish("im.message.send", "urn:phone", "evt-1", data.clone(), false)
        .await;
    pipeline.settle(Duration::from_secs(30)).await;
    pipeline
        .publish("im.message.send", "urn:phone", "evt-1", data.clone(), false)
        .await;
    // 5: keyed, straight to dedupe's partition, with no msg id, so that
    // JetStream cannot drop it anywhere: only dedupe's own idempotency
    // stands between it and a second message.
    let event = json!({"specversion": "1.0", "id": "evt-1", "source": "urn:phone", "type": "im.message.send",
        "time": "2026-01-01T00:00:00.000Z", "datacontenttype": "application/json", "data": data});
    pipeline
        .publish_raw(
            &keyed_ingest_subject("im.message.send", "dm:ann:ben"),
            HeaderMap::new(),
            serde_json::to_vec(&event).unwrap(),
        )
        .await;
    // A different event from another source with the same id is a different message.
    pipeline
        .publish("im.message.send", "urn:laptop", "evt-1", data.clone(), true)
        .await;
    pipeline.settle(Duration::from_secs(30)).await;

    let conversations = pipeline.conversations();
    let history = conversations.history("dm:ann:ben", None, 100).unwrap();
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(history[0].source, "urn:phone");
    assert_eq!(history[1].source, "urn:laptop");
    assert_eq!(
        conversations
            .conversation("dm:ann:ben")
            .unwrap()
            .unwrap()
            .last_seq,
        2
    );
    let users = pipeline.users();
    let ben = users
        .user_conversation("ben", "dm:ann:ben")
        .unwrap()
        .unwrap();
    assert_eq!(ben.unread(), 2, "unread counted once per distinct event");
    assert_eq!(users.sync_items("ben", 0, 100).unwrap().len(), 2);
    assert!(
        pipeline.dead_letters().await.is_empty(),
        "duplicates are not errors"
    );
}
