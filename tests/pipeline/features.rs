//! What people expect of a chat (issue 16), with real WebSocket clients
//! against the running processes: receipts, presence, blocking, reactions
//! and replies.

use std::time::{Duration, Instant};

use im_pipeline_tests::{http, service_token, Device, Pipeline};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// Send a text over the WebSocket and wait for its ack (or error).
async fn say(device: &mut Device, conversation: &str, id: &str, text: &str) -> Value {
    device
        .send(
            json!({"op": "send", "conversation_id": conversation, "client_msg_id": id,
                     "kind": "text", "body": {"text": text}}),
        )
        .await;
    answer_to(device, id).await
}

async fn answer_to(device: &mut Device, client_msg_id: &str) -> Value {
    device.answer_to(client_msg_id, WAIT).await
}

async fn expect_where(device: &mut Device, op: &str, matches: impl Fn(&Value) -> bool) -> Value {
    device.expect_where(op, WAIT, matches).await
}

/// A sender learns that the recipient's device received the message and
/// that the recipient read it, each pushed as a `receipt`, and `receipts`
/// answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_sees_delivery_and_read_receipts() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let (mut alice, mut bob) = pipeline.online_pair(port, port).await;
    let ack = say(&mut alice, "dm:alice:bob", "r1", "did you get this?").await;
    assert_eq!(ack["op"], "ack", "{ack}");
    let seq = ack["seq"].as_u64().unwrap();
    let received = bob.collect_messages(1, WAIT).await;
    let sync_seq = received[0]["sync_seq"].as_u64().expect("a sync_seq");

    let started = Instant::now();
    bob.send(json!({"op": "delivered", "sync_seq": sync_seq}))
        .await;
    let delivered = expect_where(&mut alice, "receipt", |f| f["delivered_seq"].is_u64()).await;
    let delivery_latency = started.elapsed();
    assert_eq!(delivered["conversation_id"], "dm:alice:bob");
    assert_eq!(delivered["user_id"], "bob");
    assert_eq!(delivered["delivered_seq"], seq);

    let started = Instant::now();
    bob.send(json!({"op": "read", "conversation_id": "dm:alice:bob", "seq": seq}))
        .await;
    let read = expect_where(&mut alice, "receipt", |f| f["read_seq"].is_u64()).await;
    let read_latency = started.elapsed();
    assert_eq!(
        (read["user_id"].clone(), read["read_seq"].clone()),
        (json!("bob"), json!(seq))
    );
    eprintln!("receipt latency: delivered {delivery_latency:?}, read {read_latency:?}");

    alice
        .send(json!({"op": "receipts", "conversation_id": "dm:alice:bob"}))
        .await;
    let result = alice.expect("receipts_result", WAIT).await;
    let members = result["members"].as_array().unwrap();
    let bob_marks = members.iter().find(|m| m["user_id"] == "bob").unwrap();
    assert_eq!(bob_marks["read_seq"], seq, "{result}");
    assert_eq!(bob_marks["delivered_seq"], seq, "{result}");
    // A stranger learns nothing of them.
    let mut eve = Device::connect(port, "eve", "phone").await;
    eve.send(json!({"op": "receipts", "conversation_id": "dm:alice:bob"}))
        .await;
    assert_eq!(eve.expect("error", WAIT).await["code"], "not_member");
}

/// Presence: online while connected, offline within the TTL after its
/// gateway is SIGKILLed (subscribers are told, with `last_seen`), and a
/// user who shares no conversation learns nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_a_dead_gateway_and_tells_strangers_nothing() {
    let mut pipeline = Pipeline::start().await;
    let ttl = [("IM_PRESENCE_TTL_SECS", "3")];
    let port_a = pipeline.start_gateway("gw-a", &ttl).await;
    let port_b = pipeline.start_gateway("gw-b", &ttl).await;
    let (mut alice, mut bob) = pipeline.online_pair(port_a, port_b).await;
    let ack = say(&mut alice, "dm:alice:bob", "p1", "hi").await;
    assert_eq!(ack["op"], "ack", "{ack}");
    bob.collect_messages(1, WAIT).await;

    alice
        .send(json!({"op": "presence_subscribe", "users": ["bob"]}))
        .await;
    let now = alice.expect("presence_result", WAIT).await;
    assert_eq!(now["users"][0]["user_id"], "bob");
    assert_eq!(now["users"][0]["online"], true, "{now}");

    let killed = Instant::now();
    pipeline.process("gw-b").kill9();
    let gone = expect_where(&mut alice, "presence", |f| f["user_id"] == "bob").await;
    let noticed = killed.elapsed();
    assert_eq!(gone["online"], false, "{gone}");
    assert!(gone["last_seen"].is_string(), "{gone}");
    eprintln!("offline noticed {noticed:?} after the SIGKILL (TTL 3 s)");
    assert!(
        noticed < Duration::from_secs(3 + 7),
        "offline only after {noticed:?}"
    );
    alice
        .send(json!({"op": "presence", "users": ["bob"]}))
        .await;
    let asked = alice.expect("presence_result", WAIT).await;
    assert_eq!(asked["users"][0]["online"], false, "{asked}");

    // Eve shares nothing with bob: refused, the same as for a made-up user.
    let mut eve = Device::connect(port_a, "eve", "phone").await;
    for user in ["bob", "nobody-at-all"] {
        eve.send(json!({"op": "presence", "users": [user]})).await;
        let refused = eve.expect("error", WAIT).await;
        assert_eq!(refused["code"], "forbidden", "{refused}");
        assert!(!refused.to_string().contains("online"), "{refused}");
    }
    eve.send(json!({"op": "presence_subscribe", "users": ["alice"]}))
        .await;
    assert_eq!(eve.expect("error", WAIT).await["code"], "forbidden");
}

/// Presence is allowed as soon as a direct message is acked: the users'
/// conversation lists (unread's) may lag the commit, here for as long as
/// unread is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_the_first_acked_direct_message_at_once() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let mut alice = Device::connect(port, "alice", "phone").await;
    let _bob = Device::connect(port, "bob", "laptop").await;
    alice
        .send(json!({"op": "presence", "users": ["bob"]}))
        .await;
    assert_eq!(alice.expect("error", WAIT).await["code"], "forbidden");
    pipeline.process("unread").stop(Duration::from_secs(5));
    let ack = say(&mut alice, "dm:alice:bob", "first", "hi").await;
    assert_eq!(ack["op"], "ack", "{ack}");
    alice
        .send(json!({"op": "presence", "users": ["bob"]}))
        .await;
    let now = alice.expect("presence_result", WAIT).await;
    assert_eq!(now["users"][0]["online"], true, "{now}");
}

/// Seed 002: a letter to someone who refuses its sender goes back to the
/// sender. A blocked user's direct messages get `blocked`; after the
/// unblock the same user gets an ack; a group is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_sender_gets_blocked_until_unblocked() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let mut alice = Device::connect(port, "alice", "phone").await;
    let mut mallory = Device::connect(port, "mallory", "laptop").await;
    pipeline
        .create_group("g:both", &["alice".to_string(), "mallory".to_string()])
        .await;
    let first = say(&mut mallory, "dm:alice:mallory", "b0", "hello").await;
    assert_eq!(first["op"], "ack", "{first}");

    alice
        .send(json!({"op": "block", "user_id": "mallory"}))
        .await;
    assert_eq!(alice.expect("blocked", WAIT).await["user_id"], "mallory");
    let refused = say(&mut mallory, "dm:alice:mallory", "b1", "let me in").await;
    assert_eq!(refused["op"], "error", "{refused}");
    assert_eq!(refused["code"], "blocked", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("alice"),
        "{refused}"
    );
    // A group is not a direct message: the block does not reach it.
    let group = say(&mut mallory, "g:both", "b2", "in the group").await;
    assert_eq!(group["op"], "ack", "{group}");
    // Blocking oneself is bad input, with a reason.
    alice.send(json!({"op": "block", "user_id": "alice"})).await;
    let error = alice.expect("error", WAIT).await;
    assert!(
        error["message"].as_str().unwrap().contains("themselves"),
        "{error}"
    );

    alice
        .send(json!({"op": "unblock", "user_id": "mallory"}))
        .await;
    assert_eq!(alice.expect("unblocked", WAIT).await["user_id"], "mallory");
    let again = say(&mut mallory, "dm:alice:mallory", "b3", "sorry").await;
    assert_eq!(again["op"], "ack", "{again}");
    // Nothing of the refused message was stored.
    let messages = im_store::ConversationStore::history(
        &pipeline.conversations(),
        "dm:alice:mallory",
        None,
        10,
    )
    .unwrap();
    let texts: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.body["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["hello", "sorry"]);
}

/// A reaction is pushed as `reacted`, shows per emoji with who reacted in
/// history (WebSocket and HTTP) and sync, is idempotent per (user, emoji),
/// takes no seq and changes no unread count; a bad emoji is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaction_shows_in_history_and_changes_no_unread() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let members = ["alice".to_string(), "bob".to_string(), "carol".to_string()];
    pipeline.create_group("g:react", &members).await;
    let (mut alice, mut bob) = pipeline.online_pair(port, port).await;
    let ack = say(&mut alice, "g:react", "x1", "lunch?").await;
    let seq = ack["seq"].as_u64().unwrap();
    bob.collect_messages(1, WAIT).await;
    let (_, before) = bob.conversation_row("g:react").await;
    let before = before.unwrap();
    assert_eq!(before["unread"], 1);

    for _ in 0..2 {
        bob.send(json!({"op": "react", "conversation_id": "g:react", "seq": seq, "emoji": "👍"}))
            .await;
    }
    bob.send(json!({"op": "react", "conversation_id": "g:react", "seq": seq, "emoji": "🍕"}))
        .await;
    let pushed = expect_where(&mut alice, "reacted", |f| f["emoji"] == "👍").await;
    assert_eq!(
        (pushed["user_id"].clone(), pushed["seq"].clone()),
        (json!("bob"), json!(seq))
    );
    expect_where(&mut alice, "reacted", |f| f["emoji"] == "🍕").await;
    bob.send(json!({"op": "unreact", "conversation_id": "g:react", "seq": seq, "emoji": "🍕"}))
        .await;
    let taken_back = expect_where(&mut alice, "reacted", |f| f["removed"] == true).await;
    assert_eq!(taken_back["emoji"], "🍕");

    for bad in ["like", "👍👍", "<b>"] {
        bob.send(json!({"op": "react", "conversation_id": "g:react", "seq": seq, "emoji": bad}))
            .await;
        let error = bob.expect("error", WAIT).await;
        assert_eq!(error["code"], "invalid_emoji", "{bad}: {error}");
    }
    bob.send(json!({"op": "react", "conversation_id": "g:react", "seq": seq + 5, "emoji": "👍"}))
        .await;
    assert_eq!(bob.expect("error", WAIT).await["code"], "not_found");

    alice
        .send(json!({"op": "history", "conversation_id": "g:react", "limit": 10}))
        .await;
    let history = alice.expect("history_result", WAIT).await;
    let message = &history["messages"][0];
    assert_eq!(
        message["reactions"],
        json!([{"emoji": "👍", "users": ["bob"]}]),
        "{history}"
    );
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        1,
        "a reaction takes no seq"
    );
    let (status, body) = http(
        port,
        "GET",
        "/v1/conversations/g:react/messages?limit=10",
        Some(&service_token()),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["messages"][0]["reactions"][0]["users"], json!(["bob"]));

    let (_, after) = bob.conversation_row("g:react").await;
    let after = after.unwrap();
    assert_eq!(
        (after["unread"].clone(), after["last_seq"].clone()),
        (before["unread"].clone(), before["last_seq"].clone())
    );
    let (_, alices) = alice.conversation_row("g:react").await;
    assert_eq!(alices.unwrap()["unread"], 0);
    // Sync carries the reactions too.
    let items = alice.sync_all(0, 100).await;
    let reactions: Vec<(String, bool)> = items
        .iter()
        .filter(|item| item["type"] == "reaction")
        .map(|item| {
            (
                item["emoji"].as_str().unwrap().to_string(),
                item["removed"] == true,
            )
        })
        .collect();
    assert_eq!(
        reactions,
        vec![
            ("👍".to_string(), false),
            ("🍕".to_string(), false),
            ("🍕".to_string(), true)
        ]
    );
}

/// A reply carries `reply_to` in its ack'd message, the push and history;
/// a reply to a seq the conversation does not have is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_carries_reply_to() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let (mut alice, mut bob) = pipeline.online_pair(port, port).await;
    let first = say(&mut alice, "dm:alice:bob", "q1", "tea?").await;
    bob.collect_messages(1, WAIT).await;
    bob.send(
        json!({"op": "send", "conversation_id": "dm:alice:bob", "client_msg_id": "a1",
                    "kind": "text", "body": {"text": "yes"}, "reply_to": first["seq"]}),
    )
    .await;
    let ack = answer_to(&mut bob, "a1").await;
    assert_eq!(ack["op"], "ack", "{ack}");
    let pushed = alice.expect_message(WAIT).await;
    assert_eq!(pushed["reply_to"], first["seq"], "{pushed}");
    alice
        .send(json!({"op": "history", "conversation_id": "dm:alice:bob", "limit": 10}))
        .await;
    let history = alice.expect("history_result", WAIT).await;
    assert_eq!(
        history["messages"][1]["reply_to"], first["seq"],
        "{history}"
    );
    assert!(
        history["messages"][0].get("reply_to").is_none(),
        "{history}"
    );

    bob.send(
        json!({"op": "send", "conversation_id": "dm:alice:bob", "client_msg_id": "a2",
                    "kind": "text", "body": {"text": "?"}, "reply_to": 99}),
    )
    .await;
    let refused = answer_to(&mut bob, "a2").await;
    assert_eq!(refused["code"], "invalid_reply", "{refused}");
}

/// `imctl chat`'s first view of a direct conversation that has no message
/// yet is an empty one, not `not_member`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_direct_conversation_reads_as_empty() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let mut bob = Device::connect(port, "bob", "phone").await;
    bob.send(json!({"op": "history", "conversation_id": "dm:alice:bob", "limit": 20}))
        .await;
    let history = bob.expect("history_result", WAIT).await;
    assert_eq!(history["messages"], json!([]), "{history}");
    // Someone else's direct conversation still answers not_member.
    bob.send(json!({"op": "history", "conversation_id": "dm:alice:carol", "limit": 20}))
        .await;
    assert_eq!(bob.expect("error", WAIT).await["code"], "not_member");
}
