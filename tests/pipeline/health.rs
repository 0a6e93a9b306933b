//! Operators can see inside (issue 18, in part): every function answers
//! `/healthz` and `/readyz` on its metrics port, `/readyz` fails while NATS
//! is down, and the gateway's `/metrics` has the send → ack histogram and
//! frames by op after a few sends.

use std::time::{Duration, Instant};

use im_harness::{free_ports, Kind, System};
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
    let base = free_ports(6);
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

/// Metric names a text mentions (`im_…`), without the histogram suffixes.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("im_") {
        let start = at + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if boundary {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(base.to_string());
        }
        at = end.max(start + 3);
    }
    names
}

/// The dashboard and the alert rules name only metrics a live system
/// serves (after a little traffic, an error and a dead letter), and the
/// rules pass `promtool check rules` where promtool is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_use_only_metrics_the_system_serves() {
    let base = free_ports(6);
    let mut pipeline = Pipeline::start_on(System::builder().metrics_from(base)).await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let (mut alice, mut bob) = pipeline.online_pair(port, port).await;
    for n in 0..3 {
        alice
            .send(json!({"op": "send", "conversation_id": "dm:alice:bob", "client_msg_id": format!("o{n}"),
                         "kind": "text", "body": {"text": "hi"}}))
            .await;
        alice.expect("ack", WAIT).await;
    }
    bob.collect_messages(3, WAIT).await;
    alice.send(json!({"op": "fly"})).await;
    alice.expect("error", WAIT).await;
    pipeline
        .publish("im.message.edit", "urn:test", "bad-1", json!({}), true)
        .await;
    let root = im_harness::workspace_root();
    let rules = std::fs::read_to_string(root.join("infra/observability/alerts.yml")).unwrap();
    let dashboard =
        std::fs::read_to_string(root.join("infra/observability/dashboard.json")).unwrap();
    let mut referenced = metric_names(&rules);
    referenced.extend(metric_names(&dashboard));
    assert!(referenced.len() >= 10, "{referenced:?}");
    let mut endpoints: Vec<u16> = pipeline.system.metrics.iter().map(|(_, p)| *p).collect();
    endpoints.push(port);
    let deadline = Instant::now() + WAIT;
    let missing = loop {
        let mut served = std::collections::BTreeSet::new();
        for endpoint in &endpoints {
            let (_, body) = http(*endpoint, "GET", "/metrics", None, &[], "").await;
            let samples: String = body
                .lines()
                .filter(|line| !line.starts_with('#'))
                .map(|line| line.split(['{', ' ']).next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            served.extend(metric_names(&samples));
        }
        let missing: Vec<String> = referenced.difference(&served).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        missing.is_empty(),
        "named by the dashboard or the rules but not served: {missing:?}"
    );
    // The rules are well-formed, and the ones with unit tests fire when
    // they should (infra/observability/alerts.test.yml).
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        match std::process::Command::new("promtool")
            .args(args)
            .current_dir(root.join("infra/observability"))
            .output()
        {
            Ok(output) => assert!(output.status.success(), "promtool {args:?}: {output:?}"),
            Err(_) => eprintln!(
                "promtool {args:?}: skipped (promtool is not installed; Debian's prometheus package has it)"
            ),
        }
    }
}
