//! The access layer (seed 003): gateways register themselves, `GET
//! /v1/connect` names a live one by the configured strategy (never a dead or
//! draining one), and a gateway that gets SIGTERM answers its sends in
//! flight and closes its sessions with 1001 so clients move to the others.

use std::time::{Duration, Instant};

use im_pipeline_tests::{http, token, Device, Pipeline};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

async fn connect_answer(port: u16, user: &str) -> (u16, Value) {
    let (status, body) = http(
        port,
        "GET",
        "/v1/connect",
        Some(&token(user, "phone", 600)),
        &[],
        "",
    )
    .await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Ask `/v1/connect` on `port` until `wanted` holds for the answer.
async fn connect_until(port: u16, user: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, answer) = connect_answer(port, user).await;
        if status == 200 && wanted(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "last answer {status} {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_names_the_least_loaded_live_gateway_and_never_a_dead_one() {
    let mut pipeline = Pipeline::start().await;
    let port_a = pipeline.start_gateway("gw-a", &[]).await;
    let port_b = pipeline.start_gateway("gw-b", &[]).await;
    let (status, _) = http(port_a, "GET", "/v1/connect", None, &[], "").await;
    assert_eq!(status, 401, "a token is needed");
    // Three devices on gw-a: gw-b has fewer connections.
    let mut held = Vec::new();
    for user in ["u1", "u2", "u3"] {
        held.push(Device::connect(port_a, user, "phone").await);
    }
    let answer = connect_until(port_a, "u4", |a| a["gateway"] == "gw-b").await;
    assert_eq!(answer["url"], format!("ws://127.0.0.1:{port_b}/v1/ws"));
    assert_eq!(answer["strategy"], "least_connections");
    // The URL it names works.
    let mut moved = Device::connect(port_b, "u4", "phone").await;
    moved.send(json!({"op": "ping"})).await;
    moved.expect("pong", WAIT).await;
    // `imctl status` lists both, with their connections and URLs.
    let deadline = Instant::now() + WAIT;
    loop {
        let output = std::process::Command::new(im_harness::workspace_binary("imctl").unwrap())
            .args(["status", "--json", "--nats-url", &pipeline.nats_url()])
            .envs(pipeline.env("imctl"))
            .output()
            .expect("imctl status runs");
        let status: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        let gateways: Vec<(String, u64, String)> = status["gateways"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                (
                    g["name"].as_str().unwrap_or_default().to_string(),
                    g["connections"].as_u64().unwrap_or(0),
                    g["url"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let wanted = vec![
            (
                "gw-a".to_string(),
                3,
                format!("ws://127.0.0.1:{port_a}/v1/ws"),
            ),
            (
                "gw-b".to_string(),
                1,
                format!("ws://127.0.0.1:{port_b}/v1/ws"),
            ),
        ];
        if gateways == wanted {
            break;
        }
        assert!(Instant::now() < deadline, "{gateways:?} {output:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // gw-b dies without a word: within the registration TTL it is no
    // longer named, although it has fewer connections.
    let killed = Instant::now();
    pipeline.process("gw-b").kill9();
    connect_until(port_a, "u5", |a| a["gateway"] == "gw-a").await;
    eprintln!(
        "a dead gateway stopped being named after {:?}",
        killed.elapsed()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_user_on_one_gateway() {
    let mut pipeline = Pipeline::start().await;
    let strategy = [("IM_CONNECT_STRATEGY", "consistent_hash")];
    let port_a = pipeline.start_gateway("gw-a", &strategy).await;
    let port_b = pipeline.start_gateway("gw-b", &strategy).await;
    // Both registered, as each of them sees it (every user hashes over
    // both): a gateway that does not see the other yet hashes over itself.
    let both = |a: &Value| {
        a["strategy"] == "consistent_hash" && a["alternatives"].as_array().map_or(0, Vec::len) == 1
    };
    connect_until(port_b, "carol", both).await;
    let first = connect_until(port_a, "carol", both).await;
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..40 {
        let user = format!("user{n}");
        let (_, from_a) = connect_answer(port_a, &user).await;
        let (_, from_b) = connect_answer(port_b, &user).await;
        assert_eq!(
            from_a["gateway"], from_b["gateway"],
            "{user}: every gateway answers alike"
        );
        seen.insert(from_a["gateway"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(seen.len(), 2, "users spread over both: {seen:?}");
    let again = connect_until(port_b, "carol", |_| true).await;
    assert_eq!(again["gateway"], first["gateway"]);
}

/// SIGTERM: every send in flight is answered, sessions close with 1001, the
/// gateway leaves the registry, and the client resumes on the other one
/// with every message there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_answers_its_sends_and_its_clients_move() {
    let mut pipeline = Pipeline::start().await;
    let drain = [("IM_DRAIN_SECS", "2")];
    let port_a = pipeline.start_gateway("gw-a", &drain).await;
    let port_b = pipeline.start_gateway("gw-b", &drain).await;
    let (mut alice, mut bob) = pipeline.online_pair(port_a, port_b).await;
    let count = 30;
    for n in 0..count {
        alice
            .send(json!({"op": "send", "conversation_id": "dm:alice:bob", "client_msg_id": format!("d{n}"),
                         "kind": "text", "body": {"text": format!("m{n}")}}))
            .await;
    }
    pipeline.process("gw-a").signal("TERM");
    let mut acked = std::collections::BTreeSet::new();
    let closed = loop {
        let frame = alice.next(WAIT).await.expect("frames until the close");
        match frame["op"].as_str() {
            Some("ack") => {
                acked.insert(frame["client_msg_id"].as_str().unwrap().to_string());
            }
            Some("closed") => break frame,
            _ => {}
        }
    };
    assert_eq!(closed["code"], 1001, "{closed}");
    assert_eq!(
        acked.len(),
        count,
        "every send in flight was answered before the close"
    );
    assert!(
        pipeline.process("gw-a").wait_exit(WAIT),
        "gw-a exits after its drain"
    );
    // /v1/connect on gw-b names gw-b now.
    let answer = connect_until(port_b, "alice", |a| a["gateway"] == "gw-b").await;
    assert_eq!(answer["url"], format!("ws://127.0.0.1:{port_b}/v1/ws"));
    let mut alice = Device::connect(port_b, "alice", "phone").await;
    let items = alice.sync_all(0, 100).await;
    let mut texts: Vec<String> = items
        .iter()
        .filter(|item| item["type"] == "message")
        .map(|item| item["body"]["text"].as_str().unwrap().to_string())
        .collect();
    texts.sort_by_key(|t| t[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..count).map(|n| format!("m{n}")).collect();
    assert_eq!(texts, expected, "each message once");
    let received = bob.collect_messages(count, WAIT).await;
    assert_eq!(received.len(), count);
}
