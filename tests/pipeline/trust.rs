//! The trust boundary (issue 13), tried as an attacker would against the
//! real gateway and pipeline.

use futures::StreamExt;
use std::time::Duration;

use im_pipeline_tests::{http, token, Device, Pipeline};
use im_store::ConversationStore;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn event(source: &str, id: &str, sender: &str, text: &str) -> String {
    json!({"specversion": "1.0", "id": id, "source": source, "type": "im.message.send",
           "datacontenttype": "application/json",
           "data": {"conversation_id": "dm:alice:bob", "sender_id": sender, "kind": "text", "body": {"text": text}}})
    .to_string()
}

/// Alice tries to pre-empt the (source, id) of bob's next send: history
/// shows every message's source and event id, and client ids are
/// predictable. Before, her event was accepted, and bob's send with that
/// id was acked with her message's seq while his text was stored nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_cannot_pre_empt_another_users_send() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let alice = token("alice", "laptop", 600);
    let bob_source = "urn:im:device:bob:phone";
    // Over HTTP, under bob's source, as herself: refused.
    let (status, body) = http(
        port,
        "POST",
        "/v1/events",
        Some(&alice),
        &[("content-type", "application/cloudevents+json")],
        &event(bob_source, "bob-1", "alice", "mine now"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("is not alice's"), "{body}");
    // Under bob's source, as bob: refused too (a user acts only as itself).
    let (status, _) = http(
        port,
        "POST",
        "/v1/events",
        Some(&alice),
        &[("content-type", "application/cloudevents+json")],
        &event(bob_source, "bob-1", "bob", "in your name"),
    )
    .await;
    assert_eq!(status, 403);
    // Straight onto the bus with bob's source: ingest refuses it.
    let payload = event(bob_source, "bob-1", "alice", "from the bus");
    pipeline
        .publish_raw(
            "im.ingest.message.send",
            async_nats::HeaderMap::new(),
            payload.clone().into_bytes(),
        )
        .await;
    let letter = pipeline.wait_dead_letter(payload.as_bytes(), WAIT).await;
    assert_eq!(letter["Im-Dlq-Code"], "forbidden", "{letter:?}");
    // Bob's send with that id is his.
    let mut bob = Device::connect(port, "bob", "phone").await;
    bob.send(json!({"op": "send", "conversation_id": "dm:alice:bob", "client_msg_id": "bob-1", "kind": "text", "body": {"text": "bob's own words"}}))
        .await;
    let ack = bob.expect("ack", WAIT).await;
    let seq = ack["seq"].as_u64().unwrap();
    let history = pipeline
        .conversations()
        .history("dm:alice:bob", None, 10)
        .unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0].seq, seq);
    assert_eq!(history[0].sender_id, "bob");
    assert_eq!(history[0].body, json!({"text": "bob's own words"}));
    assert_eq!(history[0].source, bob_source);
}

/// A device reusing one of its client ids for a different message gets a
/// conflict, never the earlier message's ack: both inside JetStream's
/// duplicate window (the gateway finds the earlier commit in the store) and
/// past it (dedupe compares the events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_client_id_for_another_message_is_a_conflict() {
    let mut pipeline = Pipeline::start().await;
    pipeline
        .create_group("g:team", &["bob".to_string(), "carol".to_string()])
        .await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let mut bob = Device::connect(port, "bob", "phone").await;
    let send = |conversation: &str, id: &str| json!({"op": "send", "conversation_id": conversation, "client_msg_id": id, "kind": "text", "body": {"text": "hi"}});
    bob.send(send("dm:alice:bob", "c1")).await;
    let first = bob.expect("ack", WAIT).await;
    // The same message again: the same ack.
    bob.send(send("dm:alice:bob", "c1")).await;
    let again = bob.expect("ack", WAIT).await;
    assert_eq!(again["seq"], first["seq"]);
    // Another conversation under the same id, within the duplicate window.
    bob.send(send("g:team", "c1")).await;
    let refused: Value = bob.expect("error", WAIT).await;
    assert_eq!(refused["code"], "conflict", "{refused}");
    assert_eq!(refused["client_msg_id"], "c1");
    // Past the window (no Nats-Msg-Id, as a publisher retrying days later):
    // dedupe itself refuses it.
    let payload = json!({"specversion": "1.0", "id": "c1", "source": "urn:im:device:bob:phone", "type": "im.message.send",
        "datacontenttype": "application/json",
        "data": {"conversation_id": "g:team", "sender_id": "bob", "kind": "text", "body": {"text": "late"}}})
    .to_string();
    pipeline
        .publish_raw(
            "im.ingest.message.send",
            async_nats::HeaderMap::new(),
            payload.clone().into_bytes(),
        )
        .await;
    // dedupe dead-letters the accepted (normalized) event it refused.
    let deadline = std::time::Instant::now() + WAIT;
    let letter = loop {
        let found = pipeline
            .dead_letters()
            .await
            .into_iter()
            .find(|(headers, body)| {
                headers.get("Im-Dlq-Function").map(String::as_str) == Some("dedupe")
                    && String::from_utf8_lossy(body).contains("\"late\"")
            });
        if let Some((headers, _)) = found {
            break headers;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter from dedupe"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letter["Im-Dlq-Code"], "conflict", "{letter:?}");
    assert!(letter["Im-Dlq-Reason"].contains("new id"), "{letter:?}");
    assert!(pipeline
        .conversations()
        .history("g:team", None, 10)
        .unwrap()
        .is_empty());
}

/// What a refusal may say: a non-member learns neither who wrote a message
/// nor that it exists, and a member added later to a `joined` conversation
/// reads only what followed the join, over WebSocket and HTTP alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_history_reveal_only_what_the_reader_may_see() {
    let mut pipeline = Pipeline::start().await;
    pipeline
        .create_group("g:team", &["alice".to_string(), "bob".to_string()])
        .await;
    for (id, text) in [("t1", "before dan 1"), ("t2", "before dan 2")] {
        pipeline.send_text("g:team", "alice", id, text).await;
    }
    pipeline
        .publish(
            "im.conversation.members.add",
            "urn:test",
            "add-dan",
            json!({"conversation_id": "g:team", "members": ["dan"]}),
            true,
        )
        .await;
    pipeline
        .send_text("g:team", "alice", "t3", "welcome dan")
        .await;
    pipeline.settle(Duration::from_secs(30)).await;
    let port = pipeline.start_gateway("gateway", &[]).await;

    // Mallory edits seq 1 of a conversation she is not in, and of one that
    // does not exist: the same refusal, naming neither alice nor the message.
    let mut mallory = Device::connect(port, "mallory", "laptop").await;
    let mut refusals = Vec::new();
    for conversation in ["g:team", "g:nothing"] {
        mallory
            .send(json!({"op": "edit", "conversation_id": conversation, "seq": 1, "body": {"text": "mine"}}))
            .await;
        let refused = mallory.expect("error", WAIT).await;
        assert_eq!(refused["code"], "not_member", "{refused}");
        let message = refused["message"].as_str().unwrap().to_string();
        assert!(!message.contains("alice"), "{message}");
        refusals.push(message.replace(conversation, "<c>"));
    }
    assert_eq!(refusals[0], refusals[1]);
    mallory
        .send(json!({"op": "history", "conversation_id": "g:team"}))
        .await;
    assert_eq!(mallory.expect("error", WAIT).await["code"], "not_member");

    // Dan reads from his join: seq 3 only, however far back he pages.
    let mut dan = Device::connect(port, "dan", "phone").await;
    let seqs = |page: &Value| -> Vec<u64> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    dan.send(json!({"op": "history", "conversation_id": "g:team"}))
        .await;
    assert_eq!(seqs(&dan.expect("history_result", WAIT).await), vec![3]);
    dan.send(json!({"op": "history", "conversation_id": "g:team", "before_seq": 3}))
        .await;
    assert_eq!(
        seqs(&dan.expect("history_result", WAIT).await),
        Vec::<u64>::new()
    );
    let path = "/v1/conversations/g:team/messages?before_seq=3";
    let (status, body) = http(
        port,
        "GET",
        path,
        Some(&token("dan", "phone", 600)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        seqs(&serde_json::from_str(&body).unwrap()),
        Vec::<u64>::new()
    );
    // Bob, there from the start, reads everything.
    let (status, body) = http(
        port,
        "GET",
        "/v1/conversations/g:team/messages",
        Some(&token("bob", "phone", 600)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seqs(&serde_json::from_str(&body).unwrap()), vec![1, 2, 3]);
}

/// The bus authenticates everyone and each role reaches only its subjects:
/// before, any process reaching the port could publish past every check,
/// read every message and push frames to any device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_refuses_strangers_and_keeps_publishers_to_ingest() {
    let pipeline = Pipeline::start().await;
    let url = pipeline.nats_url();
    // Anonymous: refused.
    let anonymous = tokio::time::timeout(WAIT, async_nats::connect(url.as_str())).await;
    match anonymous {
        Ok(Err(error)) => assert!(
            error.to_string().to_ascii_lowercase().contains("authoriz"),
            "{error}"
        ),
        Ok(Ok(_)) => panic!("an anonymous client connected"),
        Err(_) => panic!("no answer to an anonymous connect"),
    }
    // A wrong password: refused too.
    let wrong =
        async_nats::ConnectOptions::with_user_and_password("publisher".into(), "guess".into())
            .connect(url.as_str())
            .await;
    assert!(wrong.is_err(), "a wrong password connected");

    let credentials = pipeline.system.credentials_of("publisher").unwrap();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = errors.clone();
    let publisher = async_nats::ConnectOptions::with_user_and_password(
        credentials.user.clone(),
        credentials.password.clone(),
    )
    .custom_inbox_prefix(im_runtime::nats_auth::inbox_prefix(&credentials.user))
    .event_callback(move |event| {
        let seen = seen.clone();
        async move {
            if let async_nats::Event::ServerError(error) = event {
                seen.lock().unwrap().push(error.to_string());
            }
        }
    })
    .connect(url.as_str())
    .await
    .expect("the publisher connects");
    let js = async_nats::jetstream::new(publisher.clone());
    // Its own job: an event into im.ingest, committed.
    let send = event(
        "urn:service:bridge",
        "bridge-1",
        "alice",
        "through the front door",
    );
    js.publish("im.ingest.message.send", send.into())
        .await
        .unwrap()
        .await
        .expect("the publisher may publish im.ingest.>");
    // Past the checks: straight onto the internal stages, a device, a lease.
    let forged = event(
        "urn:service:bridge",
        "bridge-2",
        "alice",
        "past every check",
    );
    for subject in [
        "im.accepted.0.message.send",
        "im.timeline.0.message.committed",
        "im.delivery.0.message",
        "im.gw.gateway.user.626f62",
        "im.gw.gateway.frames",
        "$KV.IM_LEASES.dedupe.0",
    ] {
        publisher
            .publish(subject, forged.clone().into())
            .await
            .unwrap();
    }
    // Reading what it may not: every committed event, every timeline.
    let mut spy = publisher.subscribe("im.events.>").await.unwrap();
    publisher.flush().await.unwrap();
    pipeline.settle(Duration::from_secs(30)).await;
    let history = pipeline
        .conversations()
        .history("dm:alice:bob", None, 10)
        .unwrap();
    let texts: Vec<String> = history.iter().map(|m| m.body["text"].to_string()).collect();
    assert_eq!(
        texts,
        vec!["\"through the front door\"".to_string()],
        "{history:#?}"
    );
    pipeline
        .send_text("dm:alice:bob", "alice", "after-spy", "not for the spy")
        .await;
    pipeline.settle(Duration::from_secs(30)).await;
    let spied = tokio::time::timeout(Duration::from_secs(2), spy.next()).await;
    assert!(
        !matches!(spied, Ok(Some(_))),
        "the publisher read a committed event"
    );
    let errors = errors.lock().unwrap().clone();
    let violations = errors
        .iter()
        .filter(|e| e.to_ascii_lowercase().contains("permissions violation"))
        .count();
    // Six publishes and one subscription refused.
    assert!(violations >= 7, "{errors:#?}");
    // Its JetStream API is closed too: no consumer to read a stream with.
    assert!(js.get_stream("IM_TIMELINE").await.is_err());
}
