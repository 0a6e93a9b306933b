//! A function that comes back behind a large backlog catches up: every one
//! of its partitions fetches a full batch at once and publishes thousands of
//! deliveries concurrently (this once exhausted the client's publish-ack
//! permits and stalled fanout forever).

use std::time::Duration;

use im_pipeline_tests::{users, Pipeline};
use im_store::UserStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_catches_up_on_a_large_backlog() {
    let mut pipeline = Pipeline::start().await;
    pipeline.process("fanout").stop(Duration::from_secs(10));
    let people = users("bk", 64);
    let groups: Vec<String> = (0..64).map(|g| format!("g:backlog{g}")).collect();
    for (index, group) in groups.iter().enumerate() {
        // 8 members each, spread over the user partitions.
        let members: Vec<String> = (0..8)
            .map(|k| people[(index + k * 8) % people.len()].clone())
            .collect();
        pipeline.create_group(group, &members).await;
    }
    let mut pending = Vec::new();
    for n in 0..4000 {
        let group = &groups[n % groups.len()];
        let index = n % groups.len();
        let sender = &people[index % people.len()];
        let event = serde_json::json!({"specversion": "1.0", "id": format!("bk-{n}"), "source": "urn:backlog",
            "type": "im.message.send", "data": {"conversation_id": group, "sender_id": sender, "kind": "text", "body": {"text": "x"}}});
        pending.push(
            pipeline
                .js
                .publish(
                    "im.ingest.message.send",
                    serde_json::to_vec(&event).unwrap().into(),
                )
                .await
                .unwrap(),
        );
        if pending.len() == 1000 {
            for ack in pending.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in pending {
        ack.await.unwrap();
    }
    // Let dedupe commit everything while fanout is away, then bring it back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    pipeline.process("fanout").restart().unwrap();
    pipeline.settle(Duration::from_secs(120)).await;
    let store = pipeline.users();
    let mut items = 0;
    for person in &people {
        items += store.sync_items(person, 0, 100_000).unwrap().len();
    }
    assert_eq!(items, 4000 * 8, "every member got every message");
}
