//! 10,000 messages across 100 conversations while dedupe, fanout and unread
//! are each SIGKILLed and restarted at random moments: afterwards nothing is
//! lost or duplicated, every conversation's seq is continuous and every
//! unread count is exact.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use im_pipeline_tests::{users, Pipeline};
use im_store::{ConversationStore, UserStore};
use rand::{Rng, SeedableRng};

const CONVERSATIONS: usize = 100;
const MESSAGES: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_load_loses_and_duplicates_nothing() {
    let mut pipeline = Pipeline::start().await;
    let people = users("p", 40);
    let seed: u64 = std::env::var("IM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test seed {seed} (set IM_TEST_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // 100 conversations: half 1:1, half groups of 3-8.
    let mut conversations: Vec<(String, Vec<String>)> = Vec::new();
    for index in 0..CONVERSATIONS {
        if index % 2 == 0 {
            let a = &people[rng.random_range(0..20)];
            let b = &people[rng.random_range(20..40)];
            let id = im_events::ids::direct_conversation_id(a, b);
            if conversations.iter().any(|(c, _)| *c == id) {
                conversations.push((format!("g:extra{index}"), vec![a.clone(), b.clone()]));
                pipeline
                    .create_group(&format!("g:extra{index}"), &[a.clone(), b.clone()])
                    .await;
            } else {
                conversations.push((id, vec![a.clone(), b.clone()]));
            }
        } else {
            let size = rng.random_range(3..=8);
            let mut members: Vec<String> = Vec::new();
            while members.len() < size {
                let candidate = people[rng.random_range(0..people.len())].clone();
                if !members.contains(&candidate) {
                    members.push(candidate);
                }
            }
            members.sort();
            let id = format!("g:crash{index}");
            pipeline.create_group(&id, &members).await;
            conversations.push((id, members));
        }
    }

    // Publish in the background while a killer loop SIGKILLs functions.
    let plan: Vec<(usize, String)> = (0..MESSAGES)
        .map(|_| {
            let conversation = rng.random_range(0..CONVERSATIONS);
            let members = &conversations[conversation].1;
            (
                conversation,
                members[rng.random_range(0..members.len())].clone(),
            )
        })
        .collect();
    let publisher = {
        let js = pipeline.js.clone();
        let conversations = conversations.clone();
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut pending = Vec::new();
            for (n, (conversation, sender)) in plan.iter().enumerate() {
                let event = serde_json::json!({"specversion": "1.0", "id": format!("load-{n}"), "source": "urn:load",
                    "type": "im.message.send", "data": {"conversation_id": conversations[*conversation].0,
                    "sender_id": sender, "kind": "text", "body": {"text": format!("message {n}")}}});
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("urn:loadload-{n}").as_str());
                let ack = js
                    .publish_with_headers(
                        // Keyed like the groups' creates (tests/support.rs):
                        // a conversation's events are ordered only among
                        // events keyed alike (README, "Ingest scales out").
                        im_events::subjects::keyed_ingest_subject(
                            "im.message.send",
                            &conversations[*conversation].0,
                        ),
                        headers,
                        serde_json::to_vec(&event).unwrap().into(),
                    )
                    .await
                    .expect("publish");
                pending.push(ack);
                if pending.len() >= 500 {
                    for ack in pending.drain(..) {
                        ack.await.expect("publish ack");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            for ack in pending {
                ack.await.expect("publish ack");
            }
        })
    };

    let mut kills: HashMap<&str, usize> = HashMap::new();
    let started = Instant::now();
    while !publisher.is_finished() || kills.values().sum::<usize>() < 9 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..900))).await;
        let victim = ["dedupe", "fanout", "unread"][rng.random_range(0..3)];
        pipeline.process(victim).kill9();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        pipeline.process(victim).restart().expect("restart");
        *kills.entry(victim).or_default() += 1;
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "load did not finish in 4 minutes"
        );
    }
    publisher.await.unwrap();
    println!("kills: {kills:?}");
    pipeline.settle(Duration::from_secs(180)).await;

    // Expected: per conversation, the messages in publish order.
    let store = pipeline.conversations();
    let user_store = pipeline.users();
    let mut expected_count: HashMap<usize, u64> = HashMap::new();
    for (conversation, _) in &plan {
        *expected_count.entry(*conversation).or_default() += 1;
    }
    let mut total = 0;
    for (index, (id, members)) in conversations.iter().enumerate() {
        let expected = expected_count.get(&index).copied().unwrap_or(0);
        let history = store.history(id, None, 100_000).unwrap();
        let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=expected).collect::<Vec<_>>(),
            "{id}: seq must be 1..={expected} with no gap or repeat"
        );
        let mut ids: Vec<&str> = history.iter().map(|m| m.event_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len() as u64, expected, "{id}: each event once");
        // Seq order is publish order: the load numbers grow with seq.
        let order: Vec<usize> = history
            .iter()
            .map(|m| m.event_id.trim_start_matches("load-").parse().unwrap())
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{id}: seq order differs from publish order: {order:?}"
        );
        total += history.len();
        // Unread: last_seq is the conversation's; read_seq the member's last own message.
        for member in members {
            let last_own = history
                .iter()
                .filter(|m| &m.sender_id == member)
                .map(|m| m.seq)
                .max()
                .unwrap_or(0);
            let row = user_store.user_conversation(member, id).unwrap();
            if expected == 0 && id.starts_with("dm:") {
                assert!(row.is_none());
                continue;
            }
            let row = row.unwrap_or_else(|| panic!("{member} has no row for {id}"));
            assert_eq!(row.last_seq, expected, "{member} in {id}");
            assert_eq!(row.read_seq, last_own, "{member} in {id}");
        }
    }
    assert_eq!(
        total, MESSAGES,
        "every published message committed exactly once"
    );
    // Every user's sync log is continuous and holds each of their messages once.
    for person in &people {
        let items = user_store.sync_items(person, 0, 1_000_000).unwrap();
        let seqs: Vec<u64> = items.iter().map(|r| r.sync_seq).collect();
        assert_eq!(
            seqs,
            (1..=items.len() as u64).collect::<Vec<_>>(),
            "{person}: sync_seq continuous"
        );
        let mut keys: Vec<&str> = items.iter().map(|r| r.event_key.as_str()).collect();
        let before = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), before, "{person}: no sync item twice");
        let expected: usize = conversations
            .iter()
            .enumerate()
            .filter(|(_, (_, members))| members.contains(person))
            .map(|(index, _)| expected_count.get(&index).copied().unwrap_or(0) as usize)
            .sum();
        assert_eq!(
            items.len(),
            expected,
            "{person}: one item per message of their conversations"
        );
    }
    assert!(
        pipeline.dead_letters().await.is_empty(),
        "no dead letters under crashes"
    );
}
