//! The store fence firing: a stale owner (paused, then resumed after its
//! partition moved to a newer epoch) cannot commit anything, and gives the
//! partition up. The dedupe handler runs against a real nats-server and a
//! real SQLite store.

use std::sync::Arc;

use im_runtime::{BatchHandler, Claim, HandlerError, Incoming};
use im_store::ConversationStore;
use im_test_support::NatsServer;
use serde_json::json;

fn accepted(id: &str, event_type: &str, data: serde_json::Value) -> Incoming {
    let event = json!({"specversion": "1.0", "id": id, "source": "urn:test", "type": event_type, "time": "2026-01-01T00:00:00.000Z",
                       "imreceived": "2026-01-01T00:00:00.000Z", "datacontenttype": "application/json", "data": data});
    Incoming {
        subject: "im.accepted.3.message.send".into(),
        headers: vec![],
        payload: serde_json::to_vec(&event).unwrap().into(),
        stream_seq: 1,
        delivered: 1,
        published_ms: 1_767_225_600_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stale_owner_is_fenced_and_commits_nothing() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    im_runtime::topology::ensure_streams(&js).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ConversationStore> = Arc::new(
        im_store::sqlite::conversations_in(dir.path(), Some(im_store::sqlite::Durability::Normal))
            .unwrap(),
    );
    let dedupe = im_dedupe::Dedupe {
        js,
        store: store.clone(),
        config: im_dedupe::decide::Config::default(),
        conversation_partitions: 16,
    };
    // The stale owner took the partition at epoch 5; the new owner at 9.
    let stale = Claim::unleased("dedupe", 3, 5);
    let current = Claim::unleased("dedupe", 3, 9);
    dedupe
        .handle(
            &current,
            vec![accepted(
                "c1",
                "im.conversation.create",
                json!({"conversation_id": "g:fence", "kind": "group", "members": ["a", "b"]}),
            )],
        )
        .await
        .unwrap();
    dedupe
        .handle(&current, vec![accepted("s1", "im.message.send", json!({"conversation_id": "g:fence", "sender_id": "a", "kind": "text", "body": {"text": "new owner"}}))])
        .await
        .unwrap();
    // The stale owner wakes up with a batch it fetched before it paused.
    let result = dedupe
        .handle(&stale, vec![accepted("s2", "im.message.send", json!({"conversation_id": "g:fence", "sender_id": "b", "kind": "text", "body": {"text": "stale owner"}}))])
        .await;
    match result {
        Err(HandlerError::Fenced(reason)) => {
            assert!(
                reason.contains("epoch 9") && reason.contains("not 5"),
                "{reason}"
            )
        }
        other => panic!("the stale owner was not fenced: {other:?}"),
    }
    let history = store.history("g:fence", None, 10).unwrap();
    assert_eq!(
        history.len(),
        1,
        "nothing of the stale owner was committed: {history:#?}"
    );
    assert_eq!(history[0].body, json!({"text": "new owner"}));
    assert!(store.idempotency("urn:test", "s2").unwrap().is_none());
}
