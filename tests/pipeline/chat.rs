//! `imctl chat` driven in a real terminal (a pty from `script`) sends and
//! receives messages.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use im_harness::workspace_binary;
use im_pipeline_tests::{Device, Pipeline, JWT_SECRET};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imctl_chat_in_a_terminal_sends_and_receives() {
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let mut bob = Device::connect(port, "bob", "phone").await;
    let imctl = workspace_binary("imctl").unwrap();
    let command = format!(
        "{} chat --gateway 127.0.0.1:{port} --user alice --device term --secret {JWT_SECRET} --open dm:alice:bob",
        imctl.display()
    );
    // `script` runs the client on a pseudo-terminal, as a person would.
    let mut terminal = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (bsdutils) runs");
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let stdout = terminal.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
                if line.contains(needle) {
                    return line;
                }
                seen.push(line);
            }
        }
        panic!("terminal never showed {needle:?}; it showed {seen:#?}");
    };
    wait_for("connected as alice");
    pipeline
        .wait_online(&[("alice", "term"), ("bob", "phone")])
        .await;
    let mut stdin = terminal.stdin.take().unwrap();
    writeln!(stdin, "hello from the terminal").unwrap();
    stdin.flush().unwrap();
    wait_for("sent #1 in dm:alice:bob");
    let message = bob.expect("message", Duration::from_secs(20)).await;
    assert_eq!(message["body"]["text"], "hello from the terminal");
    assert_eq!(message["sender_id"], "alice");
    bob.send(json!({"op": "send", "conversation_id": "dm:alice:bob", "client_msg_id": "r1", "kind": "text", "body": {"text": "hi alice"}}))
        .await;
    wait_for("bob: hi alice");
    writeln!(stdin, "/list").unwrap();
    stdin.flush().unwrap();
    wait_for("unread in all");
    writeln!(stdin, "/quit").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while terminal.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "imctl chat did not quit");
        std::thread::sleep(Duration::from_millis(100));
    }
}
