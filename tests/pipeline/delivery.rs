//! A 1:1 message and a 50-member group: committed once, seq 1,2,3…, every
//! member's list and unread right, reads lower unread, and the total is the
//! sum of the parts at every observation.

use std::time::Duration;

use im_pipeline_tests::{eventually, users, Pipeline};
use im_store::{unread_summary, ConversationStore, UserStore};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_group_messages_reach_every_member_with_exact_unread() {
    let pipeline = Pipeline::start().await;
    // 1:1, implicitly created by its first message.
    for n in 1..=3 {
        pipeline
            .send_text(
                "dm:alice:bob",
                "alice",
                &format!("dm-{n}"),
                &format!("hello {n}"),
            )
            .await;
    }
    // A 50-member group.
    let members = users("m", 50);
    pipeline.create_group("g:fifty", &members).await;
    for n in 0..10 {
        let sender = &members[n % 5];
        pipeline
            .send_text("g:fifty", sender, &format!("g-{n}"), &format!("group {n}"))
            .await;
    }
    // Observe while messages flow: every summary is consistent with itself.
    let user_store = pipeline.users();
    let conversation_store = pipeline.conversations();
    for _ in 0..20 {
        let summary = unread_summary(&user_store, &conversation_store, "m010").unwrap();
        assert_eq!(
            summary.total_unread,
            summary.items.iter().map(|i| i.unread()).sum::<u64>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pipeline.settle(Duration::from_secs(60)).await;

    let history = conversation_store
        .history("dm:alice:bob", None, 100)
        .unwrap();
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(history[2].body, json!({"text": "hello 3"}));
    let group = conversation_store.history("g:fifty", None, 100).unwrap();
    assert_eq!(
        group.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );

    // The sender's own messages are read; the recipient has them unread.
    let alice = user_store
        .user_conversation("alice", "dm:alice:bob")
        .unwrap()
        .unwrap();
    assert_eq!((alice.last_seq, alice.read_seq, alice.unread()), (3, 3, 0));
    let bob = user_store
        .user_conversation("bob", "dm:alice:bob")
        .unwrap()
        .unwrap();
    assert_eq!((bob.last_seq, bob.read_seq, bob.unread()), (3, 0, 3));

    // Every group member has the conversation with the right unread count.
    for (index, member) in members.iter().enumerate() {
        let row = user_store
            .user_conversation(member, "g:fifty")
            .unwrap()
            .unwrap_or_else(|| panic!("{member} has no row"));
        assert_eq!(row.last_seq, 10, "{member}");
        // Senders m000..m004 sent seqs index+1 and index+6; they read up to their last own message.
        let expected_read = if index < 5 { index as u64 + 6 } else { 0 };
        assert_eq!(row.read_seq, expected_read, "{member}");
        let items = user_store.sync_items(member, 0, 100).unwrap();
        let seqs: Vec<u64> = items.iter().map(|r| r.sync_seq).collect();
        assert_eq!(
            seqs,
            (1..=10).collect::<Vec<_>>(),
            "{member}: sync_seq is continuous"
        );
        let message_seqs: Vec<u64> = items
            .iter()
            .map(|r| {
                serde_json::to_value(&r.item).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            message_seqs,
            (1..=10).collect::<Vec<_>>(),
            "{member}: each message once, in order"
        );
    }

    // Reads lower unread, and the total follows.
    pipeline
        .publish(
            "im.message.read",
            "urn:test",
            "read-1",
            json!({"conversation_id": "g:fifty", "user_id": "m010", "seq": 7}),
            true,
        )
        .await;
    pipeline
        .publish(
            "im.message.read",
            "urn:test",
            "read-2",
            json!({"conversation_id": "dm:alice:bob", "user_id": "bob", "seq": 2}),
            true,
        )
        .await;
    // An older mark after a newer one changes nothing.
    pipeline
        .publish(
            "im.message.read",
            "urn:test",
            "read-3",
            json!({"conversation_id": "g:fifty", "user_id": "m010", "seq": 3}),
            true,
        )
        .await;
    pipeline.settle(Duration::from_secs(30)).await;
    let summary = unread_summary(&user_store, &conversation_store, "m010").unwrap();
    assert_eq!(summary.items.len(), 1);
    assert_eq!(summary.items[0].unread(), 3);
    assert_eq!(summary.total_unread, 3);
    let bob_summary = unread_summary(&user_store, &conversation_store, "bob").unwrap();
    assert_eq!(bob_summary.total_unread, 1);
    let last = user_store.sync_items("m010", 10, 10).unwrap();
    assert_eq!(last.len(), 1, "one read item, the stale mark adds none");
    assert_eq!(serde_json::to_value(&last[0].item).unwrap()["type"], "read");
    assert_eq!(serde_json::to_value(&last[0].item).unwrap()["seq"], 7);

    // Committed events are published on the contract's outbound subject.
    let mut committed = pipeline
        .client
        .subscribe("im.events.message.committed")
        .await
        .unwrap();
    pipeline
        .send_text("dm:alice:bob", "bob", "dm-reply", "hi alice")
        .await;
    let event = tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut committed),
    )
    .await
    .expect("committed event")
    .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(event["type"], "im.message.committed");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["data"]["seq"], 4);
    im_events::schema::validate_data("im.message.committed", &event["data"]).unwrap();
    eventually(Duration::from_secs(20), || {
        let row = user_store
            .user_conversation("alice", "dm:alice:bob")
            .unwrap()?;
        (row.last_seq == 4).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_groups_switch_to_read_diffusion() {
    let pipeline =
        Pipeline::start_with(vec![("IM_LARGE_GROUP_THRESHOLD".into(), "20".into())]).await;
    let members = users("big", 30);
    pipeline.create_group("g:big", &members).await;
    for n in 0..5 {
        pipeline
            .send_text("g:big", &members[0], &format!("big-{n}"), "hello everyone")
            .await;
    }
    pipeline.settle(Duration::from_secs(60)).await;
    let user_store = pipeline.users();
    let conversation_store = pipeline.conversations();
    assert_eq!(
        conversation_store
            .conversation("g:big")
            .unwrap()
            .unwrap()
            .last_seq,
        5
    );
    // No per-member copies: only the sender's own.
    assert!(user_store
        .sync_items(&members[7], 0, 100)
        .unwrap()
        .is_empty());
    // The sender's own messages count as read; copies enter logs only when
    // a device syncs (materialization, tested with the gateway).
    assert!(user_store
        .sync_items(&members[0], 0, 100)
        .unwrap()
        .is_empty());
    // Unread is still exact: last_seq comes from the conversation.
    let summary = unread_summary(&user_store, &conversation_store, &members[7]).unwrap();
    assert_eq!(summary.total_unread, 5);
    assert_eq!(
        unread_summary(&user_store, &conversation_store, &members[0])
            .unwrap()
            .total_unread,
        0
    );
    pipeline
        .publish(
            "im.message.read",
            "urn:test",
            "big-read",
            json!({"conversation_id": "g:big", "user_id": members[7], "seq": 4}),
            true,
        )
        .await;
    pipeline.settle(Duration::from_secs(30)).await;
    assert_eq!(
        unread_summary(&user_store, &conversation_store, &members[7])
            .unwrap()
            .total_unread,
        1
    );
}
