//! The TypeScript SDK (clients/js) against the real system: two gateways
//! behind `/v1/connect`; the SDK's own integration script chats as alice
//! and bob, and when it asks, the gateway alice is connected to is
//! SIGKILLed while she keeps sending. The script checks every message acked
//! once, shown to bob once and in order, and bob's unread (10, then 0).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use im_pipeline_tests::{token, Pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_survives_a_killed_gateway() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("clients/js/dist/integration/run.js");
    assert!(
        script.exists(),
        "{} is missing: build the SDK first (cd clients/js && npm ci && npm run build; infra/test.sh does)",
        script.display()
    );
    let mut pipeline = Pipeline::start().await;
    let first = pipeline.start_gateway("gateway-1", &[]).await;
    let second = pipeline.start_gateway("gateway-2", &[]).await;
    let mut node = Command::new("node")
        .arg(&script)
        .env(
            "IM_GATEWAYS",
            format!("http://127.0.0.1:{first},http://127.0.0.1:{second}"),
        )
        .env("IM_TOKEN_ALICE", token("alice", "web", 600))
        .env("IM_TOKEN_BOB", token("bob", "web", 600))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (Node.js 20 or later)");
    let mut stdin = node.stdin.take().unwrap();
    let stdout = BufReader::new(node.stdout.take().unwrap());
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut killed = None;
    let mut done = None;
    while done.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = seen.recv_timeout(left) else {
            let _ = node.kill();
            panic!("the SDK script said nothing for {left:?} (or ended without `done`)");
        };
        eprintln!("sdk: {line}");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        match event["event"].as_str() {
            Some("kill") => {
                let gateway = event["gateway"]
                    .as_str()
                    .expect("alice's gateway")
                    .to_string();
                pipeline.process(&gateway).kill9();
                writeln!(stdin, "killed").unwrap();
                killed = Some(gateway);
            }
            Some("done") => done = Some(event),
            Some("failed") => panic!("the SDK script failed: {line}"),
            _ => {}
        }
    }
    let status = node.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let killed = killed.expect("a gateway was killed midway");
    let done = done.unwrap();
    assert_eq!(done["ok"], true, "{done}");
    assert_ne!(
        done["alice_gateway"].as_str(),
        Some(killed.as_str()),
        "alice ended on the surviving gateway: {done}"
    );
}
