//! Operators can see inside (issue 18, in part): every function answers
//! `/healthz` and `/readyz` on its metrics port, `/readyz` fails while NATS
//! is down, and the gateway's `/metrics` has the send → ack histogram and
//! frames by op after a few sends.

use std::time::{Duration, Instant};

use im_harness::{free_port, Kind, System};
use im_pipeline_tests::{http, Device, Pipeline};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn status_of(port: u16, path: &str) -> u16 {
    match tokio::time::timeout(
        Duration::from_secs(3),
        http(port, "GET", path, None, &[], ""),
    )
    .await
    {
        Ok((status, _)) => status,
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_say_whether_they_are_alive_and_ready() {
    // Six free ports in a row, one per function.
    let base = std::iter::repeat_with(free_port)
        .find(|port| {
            (1..6u16).all(|i| std::net::TcpListener::bind(("127.0.0.1", port + i)).is_ok())
        })
        .unwrap();
    let mut pipeline = Pipeline::start_on(System::builder().metrics_from(base)).await;
    let ports = pipeline.system.metrics.clone();
    assert_eq!(ports.len(), im_harness::FUNCTIONS.len(), "{ports:?}");
    for (name, port) in &ports {
        assert_eq!(status_of(*port, "/healthz").await, 200, "{name} /healthz");
        let deadline = Instant::now() + WAIT;
        while status_of(*port, "/readyz").await != 200 {
            assert!(Instant::now() < deadline, "{name} never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let killed = Instant::now();
    // NATS down: alive, not ready.
    for process in pipeline
        .system
        .procs
        .iter_mut()
        .filter(|p| p.kind == Kind::Nats)
    {
        process.kill9();
    }
    for (name, port) in &ports {
        let deadline = Instant::now() + WAIT;
        while status_of(*port, "/readyz").await != 503 {
            assert!(Instant::now() < deadline, "{name} still ready without NATS");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status_of(*port, "/healthz").await, 200, "{name} alive");
    }
    eprintln!(
        "every function not ready {:?} after NATS died",
        killed.elapsed()
    );
    // NATS back (same port, same store): ready again.
    for process in pipeline
        .system
        .procs
        .iter_mut()
        .filter(|p| p.kind == Kind::Nats)
    {
        process.spawn().expect("nats-server restarts");
    }
    for (name, port) in &ports {
        let deadline = Instant::now() + WAIT * 2;
        while status_of(*port, "/readyz").await != 200 {
            assert!(
                Instant::now() < deadline,
                "{name} not ready again after NATS came back"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_measures_send_to_ack_and_counts_frames() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let mut alice = Device::connect(port, "alice", "phone").await;
    for n in 0..5 {
        alice
            .send(json!({"op": "send", "conversation_id": "dm:alice:bob", "client_msg_id": format!("h{n}"),
                         "kind": "text", "body": {"text": "hi"}}))
            .await;
        alice.expect("ack", WAIT).await;
    }
    alice.send(json!({"op": "fly"})).await;
    alice.expect("error", WAIT).await;
    let (status, body) = http(port, "GET", "/metrics", None, &[], "").await;
    assert_eq!(status, 200);
    let count = body
        .lines()
        .find(|l| l.starts_with("im_gateway_send_ack_seconds_count"))
        .unwrap_or_else(|| panic!("no send→ack histogram in\n{body}"));
    assert!(count.ends_with(" 5"), "{count}");
    assert!(
        body.contains("im_gateway_send_ack_seconds_bucket{le=\"0.01\"}"),
        "buckets: {body}"
    );
    assert!(
        body.contains("im_gateway_frames_total{op=\"send\"} 5"),
        "{body}"
    );
    assert!(
        body.contains("im_gateway_errors_total{code=\"unknown_op\"} 1"),
        "{body}"
    );
    // No user or conversation id is ever a label.
    assert!(!body.contains("alice") && !body.contains("dm:"), "{body}");
}
