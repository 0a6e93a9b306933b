//! People chat through the gateway: real WebSocket clients against the
//! gateway, push and the pipeline as processes.

use std::collections::HashSet;
use std::time::Duration;

use im_pipeline_tests::{http, service_token, token, Device, Pipeline};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn send(conversation: &str, client_msg_id: &str, text: &str) -> Value {
    json!({"op": "send", "conversation_id": conversation, "client_msg_id": client_msg_id, "kind": "text", "body": {"text": text}})
}

/// A pipeline with its gateway, Alice online on her phone and laptop and
/// Bob on his phone.
async fn alice_with_two_devices_and_bob() -> (Pipeline, Device, Device, Device) {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let phone = Device::connect(port, "alice", "phone").await;
    let laptop = Device::connect(port, "alice", "laptop").await;
    let bob = Device::connect(port, "bob", "phone").await;
    pipeline
        .wait_online(&[("alice", "phone"), ("alice", "laptop"), ("bob", "phone")])
        .await;
    (pipeline, phone, laptop, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_with_two_devices_and_bob_chat() {
    let (pipeline, mut phone, mut laptop, mut bob) = alice_with_two_devices_and_bob().await;

    for n in 0..20 {
        phone
            .send(send(
                "dm:alice:bob",
                &format!("c{n}"),
                &format!("hello {n}"),
            ))
            .await;
    }
    let acks = phone.collect("ack", 20, WAIT).await;
    // The gateway keyed every send by its conversation: one ingest
    // partition holds them all.
    let ingest = pipeline.js.get_stream("IM_INGEST").await.unwrap();
    let mut subjects = std::collections::BTreeSet::new();
    for seq in 1..=ingest.get_info().await.unwrap().state.last_sequence {
        subjects.insert(
            ingest
                .get_raw_message(seq)
                .await
                .unwrap()
                .subject
                .to_string(),
        );
    }
    let keyed = format!(".{}.message.send", im_events::subjects::hex("dm:alice:bob"));
    assert!(
        subjects.len() == 1
            && subjects
                .iter()
                .all(|s| s.starts_with("im.keyed.") && s.ends_with(&keyed)),
        "{subjects:?}"
    );
    let mut seqs: Vec<u64> = acks.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    for ack in &acks {
        let n: u64 = ack["client_msg_id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(
            ack["seq"].as_u64().unwrap(),
            n + 1,
            "sends commit in the order they were sent"
        );
    }

    // Bob and Alice's other device get every message once, with contiguous
    // sync_seq (each shown once: a message pushed from its commit first
    // comes without a sync_seq, then again with it).
    for device in [&mut bob, &mut laptop] {
        let messages = device.collect_messages(20, WAIT).await;
        let seqs: Vec<u64> = messages
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        let sync: Vec<u64> = messages
            .iter()
            .map(|m| m["sync_seq"].as_u64().unwrap())
            .collect();
        assert!(
            sync.windows(2).all(|w| w[1] == w[0] + 1),
            "contiguous sync_seq: {sync:?}"
        );
        assert_eq!(messages[3]["body"]["text"], "hello 3");
        assert_eq!(messages[3]["sender_id"], "alice");
    }
    // The sending device gets acks, not its own messages back.
    assert!(phone.backlog.iter().all(|f| f["op"] != "message"));

    // A resend of the same client_msg_id gets the same ack.
    phone.send(send("dm:alice:bob", "c5", "hello 5")).await;
    let again = phone.expect("ack", WAIT).await;
    let first = acks.iter().find(|a| a["client_msg_id"] == "c5").unwrap();
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["message_id"], first["message_id"]);
    // And Bob sees no duplicate: no frame of a message he has not shown.
    while let Some(frame) = bob.next(Duration::from_millis(500)).await {
        if frame["op"] == "message" {
            assert!(
                bob.shown
                    .contains_key(frame["message_id"].as_str().unwrap()),
                "a resend made a new message: {frame}"
            );
        } else {
            bob.backlog.push_back(frame);
            break;
        }
    }

    // Bob reads: unread goes to zero; the list agrees.
    // Pushed unread frames came with the messages; the last says 20.
    loop {
        let pushed = bob.expect("unread", WAIT).await;
        if pushed["unread"] == 20 {
            assert_eq!(pushed["total"], 20);
            break;
        }
    }
    bob.backlog.clear();
    while bob.next(Duration::from_millis(300)).await.is_some() {}
    bob.send(json!({"op": "read", "conversation_id": "dm:alice:bob", "seq": 20}))
        .await;
    let unread = bob.expect("unread", WAIT).await;
    assert_eq!(
        (unread["unread"].as_u64(), unread["total"].as_u64()),
        (Some(0), Some(0))
    );
    bob.send(json!({"op": "conversations"})).await;
    let list = bob.expect("conversations_result", WAIT).await;
    assert_eq!(list["items"][0]["conversation_id"], "dm:alice:bob");
    assert_eq!(list["items"][0]["last_seq"], 20);
    // History pages backwards, ascending within a page.
    bob.send(
        json!({"op": "history", "conversation_id": "dm:alice:bob", "before_seq": 11, "limit": 5}),
    )
    .await;
    let page = bob.expect("history_result", WAIT).await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![6, 7, 8, 9, 10]);
    bob.send(json!({"op": "ping"})).await;
    bob.expect("pong", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_for_1000_messages_syncs_them_exactly_once() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline
        .start_gateway(
            "gateway",
            &[
                ("IM_RATE_PER_SECOND", "100000"),
                ("IM_RATE_BURST", "100000"),
            ],
        )
        .await;
    let mut alice = Device::connect(port, "alice", "phone").await;
    for n in 0..1000 {
        alice
            .send(send(
                "dm:alice:bob",
                &format!("m{n}"),
                &format!("message {n}"),
            ))
            .await;
    }
    alice.collect("ack", 1000, Duration::from_secs(120)).await;
    // Bob was offline; he connects and syncs from his cursor (0) in pages.
    let mut bob = Device::connect(port, "bob", "phone").await;
    // An ack means committed; bob's log may trail it by a moment, so a
    // client syncs from its cursor until it has caught up (here: 1000).
    let mut items = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while items.len() < 1000 && std::time::Instant::now() < deadline {
        let cursor = items
            .last()
            .map(|i: &Value| i["sync_seq"].as_u64().unwrap())
            .unwrap_or(0);
        items.extend(bob.sync_all(cursor, 100).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(items.len(), 1000);
    let sync: Vec<u64> = items
        .iter()
        .map(|i| i["sync_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(sync, (1..=1000).collect::<Vec<_>>());
    let texts: Vec<&str> = items
        .iter()
        .map(|i| i["body"]["text"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..1000).map(|n| format!("message {n}")).collect();
    assert_eq!(texts, expected, "in order, no duplicates");
    assert!(items.iter().all(|i| i["type"] == "message"));
    // From the middle, too.
    let tail = bob.sync_all(990, 100).await;
    assert_eq!(tail.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_from_the_token_and_nothing_leaks() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    pipeline
        .create_group("g:secret", &["ann".to_string(), "ben".to_string()])
        .await;
    pipeline
        .send_text("g:secret", "ann", "s1", "the plan")
        .await;
    pipeline.settle(WAIT).await;

    // Expired and badly signed tokens are refused at the door.
    let expired = token("mallory", "x", -10);
    assert!(Device::try_connect(port, &expired).await.is_err());
    let forged = im_gateway::auth::mint_device(
        "not-the-secret",
        "ann",
        "x",
        chrono::Utc::now().timestamp(),
        600,
    );
    assert!(Device::try_connect(port, &forged).await.is_err());
    assert!(Device::try_connect(port, "garbage").await.is_err());

    let mut mallory = Device::connect(port, "mallory", "laptop").await;
    // A frame cannot name another sender.
    mallory
        .send(json!({"op": "send", "conversation_id": "g:secret", "client_msg_id": "x1", "kind": "text", "body": {}, "sender_id": "ann"}))
        .await;
    let error = mallory.expect("error", WAIT).await;
    assert_eq!(error["code"], "bad_frame");
    // Posting, reading history or typing where mallory is no member: refused.
    mallory.send(send("g:secret", "x2", "let me in")).await;
    let error = mallory.expect("error", WAIT).await;
    assert_eq!(
        (error["code"].as_str(), error["client_msg_id"].as_str()),
        (Some("not_member"), Some("x2"))
    );
    mallory
        .send(json!({"op": "history", "conversation_id": "g:secret"}))
        .await;
    assert_eq!(mallory.expect("error", WAIT).await["code"], "not_member");
    mallory
        .send(json!({"op": "typing", "conversation_id": "g:secret"}))
        .await;
    assert_eq!(mallory.expect("error", WAIT).await["code"], "not_member");
    // Sync only ever returns mallory's own log: empty.
    mallory.send(json!({"op": "sync", "after": 0})).await;
    assert_eq!(
        mallory.expect("sync_result", WAIT).await["items"],
        json!([])
    );
    // A direct conversation of others: refused.
    mallory.send(send("dm:ann:ben", "x3", "hi")).await;
    assert_eq!(mallory.expect("error", WAIT).await["code"], "not_member");

    // HTTP: 401 without a token, 403 for a non-member or someone else's list.
    let http = |path: &str, bearer: Option<String>| {
        let url = format!("http://127.0.0.1:{port}{path}");
        async move {
            let mut stream = tokio::net::TcpStream::connect(
                url.trim_start_matches("http://").split('/').next().unwrap(),
            )
            .await
            .unwrap();
            let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
            let auth = bearer
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
            tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
                .await
                .unwrap();
            let mut response = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
                .await
                .unwrap();
            response
        }
    };
    assert!(http("/v1/conversations/g:secret/messages", None)
        .await
        .starts_with("HTTP/1.1 401"));
    assert!(http(
        "/v1/conversations/g:secret/messages",
        Some(token("mallory", "x", 60))
    )
    .await
    .starts_with("HTTP/1.1 403"));
    assert!(http(
        "/v1/users/ann/conversations",
        Some(token("mallory", "x", 60))
    )
    .await
    .starts_with("HTTP/1.1 403"));
    let allowed = http(
        "/v1/conversations/g:secret/messages",
        Some(token("ann", "x", 60)),
    )
    .await;
    assert!(
        allowed.starts_with("HTTP/1.1 200") && allowed.contains("the plan"),
        "{allowed}"
    );
    assert!(http("/healthz", None).await.contains("\"ok\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_gateway_keeps_serving() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline
        .start_gateway(
            "gateway",
            &[
                ("IM_MAX_FRAME_BYTES", "4096"),
                ("IM_RATE_PER_SECOND", "2"),
                ("IM_RATE_BURST", "5"),
            ],
        )
        .await;
    let mut bad = Device::connect(port, "bad", "d").await;
    let mut good = Device::connect(port, "good", "d").await;
    bad.send_text("not json".into()).await;
    assert_eq!(bad.expect("error", WAIT).await["code"], "bad_json");
    bad.send(json!({"op": "teleport"})).await;
    assert_eq!(bad.expect("error", WAIT).await["code"], "unknown_op");
    bad.send(json!({"op": "send", "client_msg_id": "m1"})).await;
    let missing = bad.expect("error", WAIT).await;
    assert_eq!(
        (missing["code"].as_str(), missing["client_msg_id"].as_str()),
        (Some("bad_frame"), Some("m1"))
    );
    // Flood: the burst passes, the rest is refused with rate_limited but
    // for the tokens refilled while the sends went out (a loaded machine
    // may take seconds to send them).
    let flood_started = std::time::Instant::now();
    for n in 0..15 {
        bad.send(send("dm:bad:good", &format!("f{n}"), "flood"))
            .await;
    }
    let mut limited = 0;
    let mut acked = 0;
    while limited + acked < 15 {
        let frame = bad.next(WAIT).await.expect("a frame per send");
        match frame["op"].as_str() {
            Some("ack") => acked += 1,
            Some("error") if frame["code"] == "rate_limited" => limited += 1,
            _ => {}
        }
    }
    let refilled = (flood_started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        acked >= 5 && acked <= 5 + refilled && limited == 15 - acked && limited > 0,
        "acked {acked}, limited {limited}, {refilled} tokens refilled meanwhile"
    );
    // Oversize: an error frame or close 1009, and the others are unaffected.
    bad.send_text(json!({"op": "ping", "pad": "x".repeat(8000)}).to_string())
        .await;
    let refusal = loop {
        let frame = bad
            .next(WAIT)
            .await
            .expect("an answer to the oversize frame");
        if frame["op"] == "error" || frame["op"] == "closed" {
            break frame;
        }
    };
    assert!(
        refusal["code"] == "frame_too_large" || refusal["code"] == json!(1009),
        "{refusal:?}"
    );
    good.send(json!({"op": "ping"})).await;
    good.expect("pong", WAIT).await;
    for process in pipeline.processes() {
        assert!(process.running(), "{} died", process.name);
    }
}

/// A frame over the limit is refused in words every time: the client reads
/// the `frame_too_large` error and the 1009 close, never just a reset
/// (the gateway closed with the rest of the frame unread, and the kernel
/// reset the connection, dropping what was still queued for the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_is_refused_in_words_not_by_a_reset() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline
        .start_gateway("gateway", &[("IM_MAX_FRAME_BYTES", "4096")])
        .await;
    let mut unexplained = Vec::new();
    for attempt in 0..20 {
        let mut device = Device::connect(port, "big", &format!("d{attempt}")).await;
        // Answers in flight, so the refusal queues behind them.
        for _ in 0..3 {
            device.send(json!({"op": "ping"})).await;
        }
        device
            .send_text(json!({"op": "ping", "pad": "x".repeat(64 * 1024)}).to_string())
            .await;
        let mut seen = Vec::new();
        let explained = loop {
            match device.next(WAIT).await {
                Some(frame) if frame["op"] == "error" => {
                    break frame["code"] == "frame_too_large";
                }
                Some(frame) if frame["op"] == "closed" => break frame["code"] == json!(1009),
                Some(frame) => seen.push(frame["op"].clone()),
                None => break false,
            }
        };
        if !explained {
            unexplained.push((attempt, seen));
        }
    }
    assert!(
        unexplained.is_empty(),
        "refused without a word (attempt, frames before): {unexplained:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_loses_nothing() {
    // A short presence TTL for every process (push creates the bucket too).
    let mut pipeline =
        Pipeline::start_with(vec![("IM_PRESENCE_TTL_SECS".into(), "2".into())]).await;
    let presence_ttl = [
        ("IM_RATE_PER_SECOND", "100000"),
        ("IM_RATE_BURST", "100000"),
    ];
    let first = pipeline.start_gateway("gateway-1", &presence_ttl).await;
    let second = pipeline.start_gateway("gateway-2", &presence_ttl).await;
    let mut alice = Device::connect(first, "alice", "phone").await;
    let mut bob = Device::connect(second, "bob", "phone").await;
    pipeline
        .wait_online(&[("alice", "phone"), ("bob", "phone")])
        .await;
    for n in 0..500 {
        alice
            .send(send(
                "dm:alice:bob",
                &format!("k{n}"),
                &format!("message {n}"),
            ))
            .await;
        if n == 100 {
            pipeline.process("gateway-2").kill9();
        }
    }
    alice.collect("ack", 500, Duration::from_secs(120)).await;
    // Bob saw a prefix live; his cursor is the last sync_seq he saw.
    let mut seen: Vec<Value> = Vec::new();
    while let Some(frame) = bob.next(Duration::from_millis(200)).await {
        if frame["op"] == "message" {
            seen.push(frame);
        }
    }
    let cursor = seen
        .last()
        .map(|f| f["sync_seq"].as_u64().unwrap())
        .unwrap_or(0);
    // Presence of the dead gateway's device expires by itself.
    let presence = pipeline.js.get_key_value("IM_PRESENCE").await.unwrap();
    let key = im_events::subjects::device_key("bob", "phone");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while presence.get(&key).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "bob's presence on the dead gateway did not expire"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Bob reconnects to the other gateway and syncs from his cursor.
    let mut bob = Device::connect(first, "bob", "phone").await;
    let rest = bob.sync_all(cursor, 100).await;
    let mut all: Vec<u64> = seen
        .iter()
        .chain(&rest)
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "nothing twice");
    all.sort();
    assert_eq!(all, (1..=500).collect::<Vec<_>>(), "all 500 exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_recalls_typing_and_delivered_cursors() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    pipeline
        .create_group(
            "g:crew",
            &["ann".to_string(), "ben".to_string(), "cid".to_string()],
        )
        .await;
    pipeline.settle(WAIT).await;
    let mut ann = Device::connect(port, "ann", "phone").await;
    let mut ben = Device::connect(port, "ben", "phone").await;
    let mut cid = Device::connect(port, "cid", "phone").await;
    pipeline
        .wait_online(&[("ann", "phone"), ("ben", "phone"), ("cid", "phone")])
        .await;

    ben.send(send("g:crew", "b1", "first draft")).await;
    let ack = ben.expect("ack", WAIT).await;
    let seq = ack["seq"].as_u64().unwrap();
    ann.expect("message", WAIT).await;
    // Typing reaches the others, never the typist, and is not stored.
    ben.send(json!({"op": "typing", "conversation_id": "g:crew"}))
        .await;
    let typing = cid.expect("typing", WAIT).await;
    assert_eq!(
        (
            typing["user_id"].as_str(),
            typing["conversation_id"].as_str()
        ),
        (Some("ben"), Some("g:crew"))
    );
    ann.expect("typing", WAIT).await;
    // Ben edits: every online member sees it; the sync log has it; history shows the latest body.
    ben.send(
        json!({"op": "edit", "conversation_id": "g:crew", "seq": seq, "body": {"text": "final"}}),
    )
    .await;
    let edited = ann.expect("edited", WAIT).await;
    assert_eq!(edited["body"]["text"], "final");
    cid.expect("edited", WAIT).await;
    // Cid may not edit Ben's message, nor recall it.
    cid.send(
        json!({"op": "edit", "conversation_id": "g:crew", "seq": seq, "body": {"text": "mine"}}),
    )
    .await;
    assert_eq!(cid.expect("error", WAIT).await["code"], "forbidden");
    cid.send(json!({"op": "recall", "conversation_id": "g:crew", "seq": seq}))
        .await;
    assert_eq!(cid.expect("error", WAIT).await["code"], "forbidden");
    // Ben recalls it.
    ben.send(json!({"op": "recall", "conversation_id": "g:crew", "seq": seq}))
        .await;
    assert_eq!(ann.expect("recalled", WAIT).await["seq"], seq);
    ann.send(json!({"op": "history", "conversation_id": "g:crew"}))
        .await;
    let history = ann.expect("history_result", WAIT).await;
    let message = &history["messages"][0];
    assert_eq!(message["recalled_by"], "ben");
    assert!(message["edited_at"].is_string());
    // Edits and recalls take no unread.
    ann.send(json!({"op": "conversations"})).await;
    let list = ann.expect("conversations_result", WAIT).await;
    assert_eq!(list["total_unread"], 1);
    // Typing was never stored: ann's log holds message, edit, recall only.
    let types: Vec<String> = ann
        .sync_all(0, 50)
        .await
        .iter()
        .map(|i| i["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, vec!["message", "edit", "recall"]);

    // The delivered cursor is kept per device and survives a gateway restart.
    ann.send(json!({"op": "delivered", "sync_seq": 3})).await;
    ann.send(json!({"op": "ping"})).await;
    ann.expect("pong", WAIT).await;
    pipeline.process("gateway").kill9();
    pipeline.process("gateway").restart().unwrap();
    assert!(im_harness::wait_for_port(port, WAIT));
    let cursors = pipeline.js.get_key_value("IM_DELIVERED").await.unwrap();
    let stored = cursors
        .get(im_events::subjects::device_key("ann", "phone"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stored), "3");
    assert!(
        cursors
            .get(im_events::subjects::device_key("ann", "tablet"))
            .await
            .unwrap()
            .is_none(),
        "per device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_events_in_both_modes_authorized() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let service = service_token();
    let create = json!({"specversion": "1.0", "id": "h1", "source": "urn:ops", "type": "im.conversation.create",
        "data": {"conversation_id": "g:http", "kind": "group", "members": ["ann", "ben"]}}).to_string();
    let ce_json = [("Content-Type", "application/cloudevents+json")];
    let (status, body) = http(
        port,
        "POST",
        "/v1/events",
        Some(&service),
        &ce_json,
        &create,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    // A user may not manage conversations, nor act as someone else.
    let ann = token("ann", "web", 600);
    assert_eq!(
        http(
            port,
            "POST",
            "/v1/events",
            Some(&ann),
            &ce_json,
            &create.replace("h1", "h2")
        )
        .await
        .0,
        403
    );
    let as_ben = json!({"specversion": "1.0", "id": "h3", "source": "urn:web", "type": "im.message.send",
        "data": {"conversation_id": "g:http", "sender_id": "ben", "kind": "text", "body": {"text": "forged"}}}).to_string();
    assert_eq!(
        http(port, "POST", "/v1/events", Some(&ann), &ce_json, &as_ben)
            .await
            .0,
        403
    );
    // Binary mode, as herself, under a source of her own (one that is
    // not hers, such as urn:web, is refused: issue 13).
    let mut binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "h4"),
        ("ce-source", "urn:web"),
        ("ce-type", "im.message.send"),
        ("Content-Type", "application/json"),
    ];
    let data = json!({"conversation_id": "g:http", "sender_id": "ann", "kind": "text", "body": {"text": "over http"}}).to_string();
    let (status, body) = http(port, "POST", "/v1/events", Some(&ann), &binary, &data).await;
    assert_eq!(status, 403, "{body}");
    binary[2].1 = "urn:im:user:ann";
    let (status, body) = http(port, "POST", "/v1/events", Some(&ann), &binary, &data).await;
    assert_eq!(status, 202, "{body}");
    // Stored keyed by its conversation, so ingest replicas can share the
    // load and keep it in order.
    let seq = serde_json::from_str::<Value>(&body).unwrap()["stream_seq"]
        .as_u64()
        .unwrap();
    let ingest = pipeline.js.get_stream("IM_INGEST").await.unwrap();
    let stored = ingest
        .get_raw_message(seq)
        .await
        .unwrap()
        .subject
        .to_string();
    let hex = im_events::subjects::hex("g:http");
    assert!(
        stored.starts_with("im.keyed.") && stored.ends_with(&format!(".{hex}.message.send")),
        "{stored}"
    );
    // Bad events get a 400 naming the problem.
    let (status, body) = http(port, "POST", "/v1/events", Some(&ann), &ce_json, "{nope").await;
    assert_eq!(status, 400);
    assert!(body.contains("not_json"), "{body}");
    pipeline.settle(WAIT).await;
    let (status, body) = http(
        port,
        "GET",
        "/v1/conversations/g:http/messages?limit=10",
        Some(&token("ben", "web", 60)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("over http") && !body.contains("forged"),
        "{body}"
    );
    let (status, body) = http(
        port,
        "GET",
        "/v1/users/ben/conversations",
        Some(&service),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["total_unread"], 1);
    let _device = Device::connect(port, "ann", "phone").await;
    // The session registers just after the handshake completes.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, metrics) = http(port, "GET", "/metrics", None, &[], "").await;
        assert_eq!(status, 200);
        if metrics.contains("im_gateway_connections 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_groups_push_to_online_members_without_copies() {
    let mut pipeline =
        Pipeline::start_with(vec![("IM_LARGE_GROUP_THRESHOLD".into(), "5".into())]).await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let members: Vec<String> = (0..8).map(|i| format!("lg{i}")).collect();
    pipeline.create_group("g:large", &members).await;
    pipeline.settle(WAIT).await;
    let mut sender = Device::connect(port, "lg0", "phone").await;
    let mut online = Device::connect(port, "lg1", "phone").await;
    pipeline
        .wait_online(&[("lg0", "phone"), ("lg1", "phone")])
        .await;
    sender.send(send("g:large", "big1", "to everyone")).await;
    sender.expect("ack", WAIT).await;
    let pushed = online.expect("message", WAIT).await;
    assert_eq!(pushed["body"]["text"], "to everyone");
    assert_eq!(pushed["diffusion"], "read");
    // No per-member copies were written, yet the unread count is exact.
    online.send(json!({"op": "conversations"})).await;
    assert_eq!(
        online.expect("conversations_result", WAIT).await["total_unread"],
        1
    );
    // Sync works as for any conversation: the message is copied into the
    // member's log when a device syncs, exactly once.
    let items = online.sync_all(0, 50).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        (items[0]["type"].as_str(), items[0]["sync_seq"].as_u64()),
        (Some("message"), Some(1))
    );
    assert_eq!(items[0]["body"]["text"], "to everyone");
    assert!(online.sync_all(1, 50).await.is_empty());
    // An offline member who connects later gets it by sync too, and more
    // messages continue the same log.
    sender.send(send("g:large", "big2", "second")).await;
    sender.expect("ack", WAIT).await;
    let mut later = Device::connect(port, "lg5", "phone").await;
    let items = later.sync_all(0, 50).await;
    let texts: Vec<&str> = items
        .iter()
        .map(|i| i["body"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["to everyone", "second"]);
    let seqs: Vec<u64> = items
        .iter()
        .map(|i| i["sync_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    // The sender's own messages are read for them, and in their log on sync.
    assert_eq!(sender.sync_all(0, 50).await.len(), 2);
    sender.send(json!({"op": "conversations"})).await;
    assert_eq!(
        sender.expect("conversations_result", WAIT).await["total_unread"],
        0
    );
    // History is how such a conversation is read.
    online
        .send(json!({"op": "history", "conversation_id": "g:large"}))
        .await;
    assert_eq!(
        online.expect("history_result", WAIT).await["messages"][0]["body"]["text"],
        "to everyone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_close_and_connections_per_user_are_limited() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline
        .start_gateway(
            "gateway",
            &[
                ("IM_IDLE_TIMEOUT_SECS", "1"),
                ("IM_MAX_CONNECTIONS_PER_USER", "2"),
            ],
        )
        .await;
    let mut silent = Device::connect(port, "quiet", "a").await;
    let mut chatty = Device::connect(port, "chatty", "a").await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        chatty.send(json!({"op": "ping"})).await;
        chatty.expect("pong", WAIT).await;
    }
    // The silent one was closed after its idle timeout; the pinging one lives.
    assert_eq!(
        silent
            .next(Duration::from_secs(5))
            .await
            .map(|f| f["op"].clone()),
        Some(json!("closed"))
    );
    let mut second = Device::connect(port, "chatty", "b").await;
    second.send(json!({"op": "ping"})).await;
    second.expect("pong", WAIT).await;
    // A third connection of the same user is refused with an error frame.
    let mut third = Device::connect(port, "chatty", "c").await;
    let refused = third.expect("error", WAIT).await;
    assert_eq!(refused["code"], "too_many_connections");
    assert_eq!(
        third.next(WAIT).await.map(|f| f["op"].clone()),
        Some(json!("closed"))
    );
}

/// Pushes reach a user's devices on whichever gateways hold them: presence
/// names each device's gateway, push publishes once per gateway, and each
/// gateway hands frames to its own connections (never back to the sending
/// device). Typing crosses gateways too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_two_gateways_each_get_their_pushes() {
    let mut pipeline = Pipeline::start().await;
    let first = pipeline.start_gateway("gateway-a", &[]).await;
    let second = pipeline.start_gateway("gateway-b", &[]).await;
    pipeline
        .create_group(
            "g:two",
            &["ann".to_string(), "ben".to_string(), "cid".to_string()],
        )
        .await;
    pipeline.settle(WAIT).await;
    let mut ann_phone = Device::connect(first, "ann", "phone").await;
    let mut ann_laptop = Device::connect(second, "ann", "laptop").await;
    let mut ben = Device::connect(second, "ben", "phone").await;
    let mut cid = Device::connect(first, "cid", "phone").await;
    pipeline
        .wait_online(&[
            ("ann", "phone"),
            ("ann", "laptop"),
            ("ben", "phone"),
            ("cid", "phone"),
        ])
        .await;
    ben.send(send("g:two", "b1", "hello both gateways")).await;
    let ack = ben.expect("ack", WAIT).await;
    for device in [&mut ann_phone, &mut ann_laptop, &mut cid] {
        let message = device.expect_message(WAIT).await;
        assert_eq!(message["seq"], ack["seq"]);
        assert_eq!(message["body"]["text"], "hello both gateways");
        let unread = device.expect("unread", WAIT).await;
        assert_eq!(unread["unread"], 1);
    }
    // Ann's phone writes: her laptop (other gateway) gets it, the phone not.
    ann_phone.send(send("g:two", "a1", "from the phone")).await;
    ann_phone.expect("ack", WAIT).await;
    let echoed = ann_laptop.expect_message(WAIT).await;
    assert_eq!(echoed["body"]["text"], "from the phone");
    assert_eq!(
        ben.expect_message(WAIT).await["body"]["text"],
        "from the phone"
    );
    while let Some(frame) = ann_phone.next(Duration::from_millis(500)).await {
        assert!(
            frame["op"] != "message" || frame["source"] != "urn:im:device:ann:phone",
            "the sending device got its own message: {frame}"
        );
    }
    // Typing on gateway-b reaches ann on both gateways and cid on gateway-a.
    ben.send(json!({"op": "typing", "conversation_id": "g:two"}))
        .await;
    for device in [&mut ann_phone, &mut ann_laptop, &mut cid] {
        let typing = device.expect("typing", WAIT).await;
        assert_eq!(typing["user_id"], "ben");
    }
    while let Some(frame) = ben.next(Duration::from_millis(500)).await {
        assert_ne!(frame["op"], "typing", "the typist got its own typing frame");
    }
}

/// The fast path (issue 12): a message reaches the online recipient from
/// its commit, before unread has placed it in the recipient's sync log:
/// with unread stopped, bob still gets it, with its conversation seq and no
/// sync_seq. When unread runs again it arrives again with its sync_seq, and
/// the sync log holds it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_an_online_device_from_its_commit() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let mut alice = Device::connect(port, "alice", "phone").await;
    let mut bob = Device::connect(port, "bob", "phone").await;
    pipeline
        .wait_online(&[("alice", "phone"), ("bob", "phone")])
        .await;
    alice.send(send("dm:alice:bob", "warm-up", "hi")).await;
    alice.expect("ack", WAIT).await;
    bob.collect_messages(1, WAIT).await;
    pipeline.process("unread").kill9();
    alice
        .send(send("dm:alice:bob", "fast-1", "while unread is down"))
        .await;
    let ack = alice.expect("ack", WAIT).await;
    let fast = bob.expect_message(WAIT).await;
    assert_eq!(fast["body"]["text"], "while unread is down");
    assert_eq!(fast["seq"], ack["seq"]);
    assert!(
        fast.get("sync_seq").is_none(),
        "it came before its sync item existed: {fast}"
    );
    pipeline.process("unread").restart().unwrap();
    let id = fast["message_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + WAIT;
    while bob.shown[&id].is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no frame with its sync_seq"
        );
        if let Some(frame) = bob.next(Duration::from_millis(500)).await {
            if frame["op"] == "message" && frame["message_id"] == id.as_str() {
                bob.shown.insert(id.clone(), frame["sync_seq"].as_u64());
            }
        }
    }
    let items = bob.sync_all(0, 100).await;
    let copies = items
        .iter()
        .filter(|i| i["type"] == "message" && i["message_id"] == id.as_str())
        .count();
    assert_eq!(copies, 1, "{items:#?}");
}

/// A device never sees its own read undone (issue 16): bob has 5 unread
/// in a group and reads up to 3; the answer says 2 unread, and his very
/// next `conversations` says read_seq 3 and 2 unread — three times over.
/// Before, the answer was computed from the read the gateway forwarded and
/// the list from the store, which the unread function had not updated yet
/// (read_seq 0, unread 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_sticks_for_the_device_that_made_it() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let mut bob = Device::connect(port, "bob", "phone").await;
    for round in 0..3 {
        let group = format!("g:reads{round}");
        pipeline
            .create_group(&group, &["alice".to_string(), "bob".to_string()])
            .await;
        for n in 1..=5 {
            pipeline
                .send_text(&group, "alice", &format!("{group}-{n}"), &format!("m{n}"))
                .await;
        }
        // Wait until bob's list shows the five.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (list, row) = bob.conversation_row(&group).await;
            if row.as_ref().is_some_and(|row| row["unread"] == 5) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{list}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The unread frames pushed for the five come first (a push of the
        // fifth arriving after the read's answer would be the push path
        // lagging, not this read being undone): wait for the last.
        let before = loop {
            let pushed = bob.expect("unread", WAIT).await;
            if pushed["conversation_id"] == group.as_str() && pushed["unread"] == 5 {
                break pushed;
            }
        };
        bob.backlog.clear();
        bob.send(json!({"op": "read", "conversation_id": group, "seq": 3}))
            .await;
        // The answer to this read (pushed unread frames of other
        // conversations may come in between, and a late push of the state
        // `before` described, which the device ignores for its `as_of`: the
        // push of one batch reads the counts after a later batch committed,
        // so the five can be pushed twice).
        let answer = loop {
            let frame = bob.expect("unread", WAIT).await;
            if frame["conversation_id"] == group.as_str()
                && frame["as_of"].as_u64() > before["as_of"].as_u64()
            {
                break frame;
            }
            assert!(
                frame["conversation_id"] != group.as_str() || frame["unread"] == 5,
                "round {round}: a push of an older state counts otherwise: {frame}"
            );
        };
        assert_eq!(answer["unread"], 2, "round {round}: {answer}");
        // A pushed frame of the older state, however late it comes, has a
        // lower `as_of`: the device keeps the answer's counts.
        assert!(
            answer["as_of"].as_u64() > before["as_of"].as_u64(),
            "round {round}: {before} then {answer}"
        );
        let (list, row) = bob.conversation_row(&group).await;
        let row = row.expect("bob's row");
        assert_eq!(
            (row["read_seq"].as_u64(), row["unread"].as_u64()),
            (Some(3), Some(2)),
            "round {round}: the read was undone: {row}"
        );
        assert_eq!(list["total_unread"], answer["total"], "round {round}");
    }
}

/// Mute over the WebSocket (issue 16): answered once the conversation
/// list shows it; null unmutes; a time that is not one is refused with the
/// reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_mutes_and_unmutes_a_conversation() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    pipeline
        .create_group("g:quiet", &["alice".to_string(), "bob".to_string()])
        .await;
    pipeline.send_text("g:quiet", "alice", "q1", "hello").await;
    let mut bob = Device::connect(port, "bob", "phone").await;
    // Wait for bob's row.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (list, row) = bob.conversation_row("g:quiet").await;
        if row.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bob.send(json!({"op": "mute", "conversation_id": "g:quiet", "until": "2030-01-01T00:00:00Z"}))
        .await;
    let muted = bob.expect("muted", WAIT).await;
    assert_eq!(muted["until"], "2030-01-01T00:00:00.000Z", "{muted}");
    let (list, row) = bob.conversation_row("g:quiet").await;
    assert_eq!(
        row.map(|row| row["muted_until"].clone()),
        Some(json!("2030-01-01T00:00:00.000Z")),
        "{list}"
    );
    bob.send(json!({"op": "mute", "conversation_id": "g:quiet", "until": null}))
        .await;
    let unmuted = bob.expect("muted", WAIT).await;
    assert_eq!(unmuted["until"], Value::Null, "{unmuted}");
    let (list, row) = bob.conversation_row("g:quiet").await;
    assert_eq!(
        row.map(|row| row["muted_until"].clone()),
        Some(Value::Null),
        "{list}"
    );
    bob.send(json!({"op": "mute", "conversation_id": "g:quiet", "until": "next tuesday"}))
        .await;
    let refused = bob.expect("error", WAIT).await;
    assert!(
        refused["message"].as_str().unwrap().contains("RFC 3339"),
        "{refused}"
    );
    // Not a member: refused like any other conversation it may not see.
    bob.send(json!({"op": "mute", "conversation_id": "g:elsewhere", "until": null}))
        .await;
    let refused = bob.expect("error", WAIT).await;
    assert_eq!(refused["code"], "not_member", "{refused}");
}

/// Every HTTP refusal is JSON with a `code` (issue 17: schemathesis found
/// axum's plain-text query errors and empty 404/405 bodies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusals_are_json_with_a_code() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let token = service_token();
    for (method, path, status, code) in [
        (
            "GET",
            "/v1/conversations/g:x/messages?limit=abc",
            400,
            "bad_request",
        ),
        ("GET", "/v1/notifications?limit=-1", 400, "bad_request"),
        ("GET", "/v1/nothing-here", 404, "not_found"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
    ] {
        let (got, body) = http(port, method, path, Some(&token), &[], "").await;
        assert_eq!(got, status, "{method} {path}: {body}");
        let value: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
        assert_eq!(value["code"], code, "{method} {path}: {body}");
        assert!(
            value["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
}

/// Only push and dedupe publish on a gateway's frames subject. A frame
/// there that is not a frame (not a JSON object with an `op`) is dropped
/// and counted, not written to the device's socket as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_is_not_a_frame_never_reaches_the_socket() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let mut bob = Device::connect(port, "bob", "phone").await;
    pipeline.wait_online(&[("bob", "phone")]).await;
    let subject = im_events::subjects::gateway_frames_subject("gateway");
    let bob_only = ["bob".to_string()];
    let for_bob =
        |frame: &str| im_events::frames::gateway_frames_payload(&[(&bob_only, frame)]).unwrap();
    for payload in [
        for_bob("[1,2]"),
        for_bob(r#""a string""#),
        for_bob(r#"{"seq":1}"#),
        for_bob(r#"{"op":5}"#),
        b"not json".to_vec(),
    ] {
        pipeline
            .client
            .publish(subject.clone(), payload.into())
            .await
            .unwrap();
    }
    let frame = json!({"op": "unread", "conversation_id": "dm:alice:bob", "unread": 1, "total": 1, "as_of": 1});
    pipeline
        .client
        .publish(subject, for_bob(&frame.to_string()).into())
        .await
        .unwrap();
    assert_eq!(bob.next(WAIT).await, Some(frame));
    assert_eq!(
        bob.next(Duration::from_millis(500)).await,
        None,
        "nothing else"
    );
}

/// Frames come to a gateway in batches too (`im.gw.<gateway>.frames`):
/// each frame goes to every device of its users there, in order; a batch
/// that does not read, or an entry in it that is not a frame, never
/// reaches a socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_in_a_batch_reach_their_users_and_a_bad_one_none() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let mut bob = Device::connect(port, "bob", "phone").await;
    let mut carol = Device::connect(port, "carol", "laptop").await;
    pipeline
        .wait_online(&[("bob", "phone"), ("carol", "laptop")])
        .await;
    let subject = im_events::subjects::gateway_frames_subject("gateway");
    for payload in [
        &b"[1,2]"[..],
        b"not json",
        br#"{"frames":[{"users":["bob"]}]}"#,
    ] {
        pipeline
            .client
            .publish(subject.clone(), payload.to_vec().into())
            .await
            .unwrap();
    }
    let first =
        json!({"op": "unread", "conversation_id": "g:x", "unread": 1, "total": 1, "as_of": 1});
    let second =
        json!({"op": "unread", "conversation_id": "g:x", "unread": 2, "total": 2, "as_of": 2});
    let (both, bob_only) = (
        ["bob".to_string(), "carol".to_string()],
        ["bob".to_string()],
    );
    let payload = im_events::frames::gateway_frames_payload(&[
        (&both, &first.to_string()),
        (&bob_only, "[1,2]"),
        (&bob_only, &second.to_string()),
    ])
    .unwrap();
    pipeline
        .client
        .publish(subject, payload.into())
        .await
        .unwrap();
    assert_eq!(bob.next(WAIT).await, Some(first.clone()));
    assert_eq!(bob.next(WAIT).await, Some(second));
    assert_eq!(carol.next(WAIT).await, Some(first));
    for device in [&mut bob, &mut carol] {
        assert_eq!(
            device.next(Duration::from_millis(500)).await,
            None,
            "nothing else"
        );
    }
}

/// Unread is pushed on change: a user's own message leaves their count
/// where it was (it is read as it is sent), so their devices get no
/// `unread` frame for it; the peer's next message does (before, every
/// durable message pushed one to sender and recipient alike: the sender's
/// said 0 again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_own_message_pushes_no_unread_frame_to_them() {
    let (_pipeline, mut phone, mut laptop, mut bob) = alice_with_two_devices_and_bob().await;
    phone.send(send("dm:alice:bob", "a1", "hi")).await;
    phone.expect("ack", WAIT).await;
    let first = bob.expect("unread", WAIT).await;
    assert_eq!(
        (first["unread"].as_u64(), first["total"].as_u64()),
        (Some(1), Some(1))
    );
    // Bob answers: Alice's first unread frame is for his message. Her
    // devices' pushes come in the order her sync log took them, so one
    // for her own message would have come first.
    bob.send(send("dm:alice:bob", "b1", "hello")).await;
    bob.expect("ack", WAIT).await;
    for device in [&mut phone, &mut laptop] {
        let unread = device.expect("unread", WAIT).await;
        assert_eq!(
            (unread["unread"].as_u64(), unread["as_of"].as_u64()),
            (Some(1), Some(2)),
            "{unread}"
        );
    }
    // Bob's own message changed his count too: he had one unread, his
    // answer reads it.
    let answered = bob.expect("unread", WAIT).await;
    assert_eq!(answered["unread"], 0, "{answered}");
}
