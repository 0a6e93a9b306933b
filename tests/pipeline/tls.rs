//! TLS where the system faces a network (issue 13): clients of nats-server,
//! the routes between its nodes, and the gateway, with a CA and
//! certificates made for the test's data directory. TLS connections work;
//! plaintext ones are refused.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use im_harness::System;
use im_pipeline_tests::{token, Device, Pipeline};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// What nats-server says to a client that speaks plaintext: its INFO line,
/// then, after a plaintext CONNECT, its answer (or nothing: it hung up).
fn plaintext_exchange(port: u16) -> (String, String) {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut info = String::new();
    reader.read_line(&mut info).unwrap();
    let _ = (&stream).write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    let mut answer = String::new();
    let _ = reader.read_line(&mut answer);
    (info, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_and_the_gateway_speak_only_tls() {
    let mut pipeline = Pipeline::start_on(System::builder().tls(true)).await;
    let tls = pipeline.system.tls.clone().expect("TLS files");
    let port = pipeline.start_gateway("gateway", &[]).await;

    // NATS: a plaintext client is refused; one that does not trust the CA
    // is refused with what to do; the processes (over TLS) run.
    let (info, answer) = plaintext_exchange(pipeline.system.nats_ports[0]);
    assert!(info.contains("\"tls_required\":true"), "{info}");
    assert!(
        !answer.starts_with("PONG"),
        "a plaintext client was answered: {answer:?}"
    );
    let admin = pipeline.system.admin().unwrap();
    let untrusting = async_nats::ConnectOptions::with_user_and_password(admin.user, admin.password)
        .connect(pipeline.nats_url().as_str())
        .await;
    assert!(
        untrusting.is_err(),
        "a client that does not trust the CA connected"
    );

    // The gateway: WSS works end to end; plaintext WebSocket does not.
    assert!(
        Device::try_connect(port, &token("alice", "phone", 600))
            .await
            .is_err(),
        "a plaintext WebSocket was accepted on the TLS port"
    );
    // A client that opens the socket and never speaks holds no one up: the
    // handshakes run apart, each with its deadline.
    let _silent: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut alice = Device::try_connect_tls(port, &token("alice", "phone", 600), &tls.ca)
        .await
        .expect("wss connects");
    let mut bob = Device::try_connect_tls(port, &token("bob", "phone", 600), &tls.ca)
        .await
        .expect("wss connects");
    pipeline
        .wait_online(&[("alice", "phone"), ("bob", "phone")])
        .await;
    alice
        .send(
            json!({"op": "send", "conversation_id": "dm:alice:bob", "client_msg_id": "t1",
                     "kind": "text", "body": {"text": "over TLS"}}),
        )
        .await;
    let ack = alice.expect("ack", WAIT).await;
    assert_eq!(ack["seq"], 1, "{ack}");
    let message = bob.expect_message(WAIT).await;
    assert_eq!(message["body"]["text"], "over TLS", "{message}");
}

/// A cluster's routes use TLS and a password: the cluster forms (R3
/// streams are created, which needs a quorum over the routes), and a
/// stray nats-server that knows the route port, and even holds a
/// certificate the CA signed, cannot join without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routes_need_tls_and_their_password() {
    let system = System::builder()
        .cluster(3)
        .tls(true)
        .functions(&[])
        .gateways(0)
        .start()
        .await
        .expect("a TLS cluster forms and takes R3 streams");
    let tls = system.tls.clone().unwrap();
    let js = system.js().await.unwrap();
    let info = im_pipeline_tests::stream_info(&js, "IM_INGEST").await;
    assert_eq!(info.config.num_replicas, 3);
    let replicas = info.cluster.as_ref().map(|c| c.replicas.len()).unwrap_or(0);
    assert_eq!(
        replicas, 2,
        "two followers beside the leader: {:?}",
        info.cluster
    );

    // The stray: TLS with a certificate the CA signed, but no password.
    let dir = tempfile::tempdir().unwrap();
    let route = system.nats_ports[0] + 2000;
    let conf = dir.path().join("stray.conf");
    std::fs::write(
        &conf,
        format!(
            "server_name: stray\nhost: 127.0.0.1\nport: {}\n\
             cluster {{ name: im-local, host: 127.0.0.1, port: {}, routes: [nats://127.0.0.1:{route}],\n\
               tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }} }}\n",
            im_harness::free_port(),
            im_harness::free_port(),
            tls.cert,
            tls.key,
            tls.ca
        ),
    )
    .unwrap();
    let log = dir.path().join("stray.log");
    let mut stray = im_harness::Proc::new(
        "stray",
        im_harness::Kind::Nats,
        im_harness::nats_server_binary().unwrap(),
        vec!["-c".into(), conf.display().to_string()],
        vec![],
        log.clone(),
    );
    stray.spawn().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let refused = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .to_ascii_lowercase()
            .contains("authorization violation")
        {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(refused, "the stray was not refused: {text}");
    stray.kill9();
}
