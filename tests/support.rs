//! Shared pieces of the pipeline tests: a running pipeline (real nats-server,
//! every function as its own process, real SQLite stores in a temp dir),
//! publishing helpers, and waits.

pub mod standins;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use futures::StreamExt;
use im_harness::{Durability, Kind, Proc, System};
use im_store::sqlite::{SqliteConversationStore, SqliteUserStore};
use serde_json::{json, Value};

pub use im_harness::FUNCTIONS;
/// Long enough for the gateway (a short or well-known secret is refused).
pub const JWT_SECRET: &str = "pipeline-tests-only-7c1f0a9e2b4d46e8a3f5";
/// The key of service tokens: another than the users'.
pub const SERVICE_SECRET: &str = "pipeline-tests-services-3b8e51d0c94f4a7a";

pub struct Pipeline {
    /// nats-server, the functions and any gateways, as processes.
    pub system: System,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

impl Pipeline {
    pub async fn start() -> Pipeline {
        Self::start_with(vec![]).await
    }

    /// Start with extra environment for every function (e.g. a short recall window).
    pub async fn start_with(extra_env: Vec<(String, String)>) -> Pipeline {
        Self::start_on(System::builder().envs(extra_env)).await
    }

    /// Start from a builder the test has set up (TLS, say), with the
    /// settings every pipeline test runs with.
    pub async fn start_on(builder: im_harness::Builder) -> Pipeline {
        let system = builder
            .gateways(0)
            // The count this test process's topology has, so that what the
            // tests compute (subjects, partitions) agrees with the system.
            .partitions(im_runtime::topology::topology().partitions.conversation)
            // Process crashes are what these tests inflict: relaxed (and
            // NORMAL SQLite) survives them, and keeps the suite quick.
            .durability(Durability::Relaxed)
            .env("IM_SQLITE_SYNC", "normal")
            .env("IM_LEASE_TTL_MS", "1500")
            .start()
            .await
            .expect("the pipeline starts");
        // The tests act as the operator: the admin role.
        let client = system.client("pipeline-tests").await.expect("connect");
        let js = jetstream::new(client.clone());
        let pipeline = Pipeline { system, client, js };
        pipeline.wait_for_consumers(Duration::from_secs(30)).await;
        pipeline
    }

    pub fn nats_url(&self) -> String {
        self.system.nats_url.clone()
    }

    pub fn data_dir(&self) -> &Path {
        &self.system.data_dir
    }

    /// The environment of an operator's process (imctl) named `instance`.
    pub fn env(&self, instance: &str) -> Vec<(String, String)> {
        self.system.env_for("admin", instance, &[])
    }

    /// Start a gateway named `instance`; returns its HTTP port.
    pub async fn start_gateway(&mut self, instance: &str, extra: &[(&str, &str)]) -> u16 {
        let mut env = vec![
            ("IM_JWT_SECRET".to_string(), JWT_SECRET.to_string()),
            ("IM_SERVICE_SECRET".to_string(), SERVICE_SECRET.to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.system
            .add_gateway(instance, &env)
            .await
            .expect("gateway starts")
    }

    /// Start a replica of `function` under the name `instance`.
    pub fn spawn(&mut self, function: &str, instance: &str) {
        self.system
            .add_function(function, instance, &[])
            .expect("function starts");
    }

    pub fn process(&mut self, instance: &str) -> &mut Proc {
        self.system.proc(instance).expect("known process")
    }

    /// The function and gateway processes (not nats-server).
    pub fn processes(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.system
            .procs
            .iter_mut()
            .filter(|p| p.kind != Kind::Nats)
    }

    pub fn conversations(&self) -> SqliteConversationStore {
        im_store::sqlite::conversations_in(self.data_dir(), None).unwrap()
    }

    pub fn users(&self) -> SqliteUserStore {
        im_store::sqlite::users_in(self.data_dir(), None).unwrap()
    }

    pub fn data_path(&self, file: &str) -> PathBuf {
        self.data_dir().join(file)
    }

    /// Publish a structured-mode CloudEvent keyed by its conversation
    /// (`im.ingest.k.<hex>.<type>`, as the gateway and imctl do).
    pub async fn publish(
        &self,
        event_type: &str,
        source: &str,
        id: &str,
        data: Value,
        with_msg_id: bool,
    ) {
        let subject = im_events::subjects::ingest_subject_for(event_type, &data);
        self.publish_on(&subject, event_type, source, id, data, with_msg_id)
            .await
    }

    /// Publish it unkeyed, on `im.ingest.<type>`, as a publisher that does
    /// not know the keys does.
    pub async fn publish_unkeyed(&self, event_type: &str, source: &str, id: &str, data: Value) {
        let subject = im_events::subjects::ingest_subject(event_type);
        self.publish_on(&subject, event_type, source, id, data, true)
            .await
    }

    async fn publish_on(
        &self,
        subject: &str,
        event_type: &str,
        source: &str,
        id: &str,
        data: Value,
        with_msg_id: bool,
    ) {
        let event = json!({"specversion": "1.0", "id": id, "source": source, "type": event_type,
                           "datacontenttype": "application/json", "data": data});
        let mut headers = HeaderMap::new();
        if with_msg_id {
            headers.insert(
                "Nats-Msg-Id",
                im_events::ids::nats_msg_id(source, id).as_str(),
            );
        }
        self.publish_raw(subject, headers, serde_json::to_vec(&event).unwrap())
            .await;
    }

    pub async fn publish_raw(&self, subject: &str, headers: HeaderMap, payload: Vec<u8>) {
        self.js
            .publish_with_headers(subject.to_string(), headers, payload.into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }

    pub async fn create_group(&self, id: &str, members: &[String]) {
        self.publish(
            "im.conversation.create",
            "urn:test",
            &format!("create-{id}"),
            json!({"conversation_id": id, "kind": "group", "members": members, "admins": [members[0]]}),
            true,
        )
        .await;
    }

    pub async fn send_text(&self, conversation: &str, sender: &str, id: &str, text: &str) {
        self.publish(
            "im.message.send",
            "urn:test",
            id,
            json!({"conversation_id": conversation, "sender_id": sender, "kind": "text", "body": {"text": text}}),
            true,
        )
        .await;
    }

    /// The partitioned pipeline streams on the server (shards included).
    pub async fn pipeline_streams(&self) -> Vec<String> {
        im_runtime::topology::pipeline_streams(&self.js)
            .await
            .expect("the streams can be listed")
    }

    async fn wait_for_consumers(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut count = 0;
            for stream in self.pipeline_streams().await {
                let stream = self.js.get_stream(stream).await.unwrap();
                count += stream.consumer_names().count().await;
            }
            let topology = im_runtime::topology::topology();
            let expected: u32 = topology
                .consumers
                .iter()
                .map(|def| topology.partition_count(def))
                .sum();
            if count == expected as usize {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {count} consumers exist after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// If every consumer has nothing pending and nothing unacked: the sum of
    /// the streams' last sequences, which tells whether anything moved
    /// between two looks.
    pub async fn idle(&self) -> Option<u64> {
        let mut position = 0;
        let mut streams = self.pipeline_streams().await;
        streams.push("IM_DLQ".to_string());
        for stream_name in streams {
            let stream = self.js.get_stream(&stream_name).await.unwrap();
            position += stream.get_info().await.ok()?.state.last_sequence;
            if stream_name == "IM_DLQ" {
                continue;
            }
            let mut consumers = stream.consumers();
            while let Some(info) = consumers.next().await {
                let info = info.ok()?;
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    return None;
                }
            }
        }
        Some(position)
    }

    /// The last lines of every process's log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut text = String::new();
        for process in self.system.procs.iter().filter(|p| p.kind != Kind::Nats) {
            let log = process.log_text();
            let lines: Vec<&str> = log.lines().collect();
            text.push_str(&format!(
                "--- {} (last 15 of {} lines)\n",
                process.name,
                lines.len()
            ));
            for line in &lines[lines.len().saturating_sub(15)..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// One line per consumer with anything pending, for failure messages.
    pub async fn consumer_report(&self) -> String {
        let mut report = String::new();
        for stream_name in self.pipeline_streams().await {
            let stream = self.js.get_stream(&stream_name).await.unwrap();
            let mut consumers = stream.consumers();
            while let Some(Ok(info)) = consumers.next().await {
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    report.push_str(&format!(
                        "{stream_name}/{}: pending {} ack_pending {} redelivered {} delivered {:?} ack_floor {:?}\n",
                        info.name, info.num_pending, info.num_ack_pending, info.num_redelivered, info.delivered, info.ack_floor
                    ));
                }
            }
        }
        report
    }

    /// Wait until the pipeline has processed everything published so far.
    pub async fn settle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // Idle, with no stream moving, for several looks in a row: a message
        // between two stages shows up as a moved position.
        let mut idle_rounds = 0;
        let mut last_position = None;
        while idle_rounds < 4 {
            if Instant::now() >= deadline {
                panic!(
                    "pipeline did not settle within {timeout:?}:\n{}\n{}",
                    self.consumer_report().await,
                    self.log_tails()
                );
            }
            let position = self.idle().await;
            if position.is_some() && position == last_position {
                idle_rounds += 1;
            } else {
                idle_rounds = 0;
            }
            last_position = position;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Dead letters, oldest first: (headers, payload).
    pub async fn dead_letters(&self) -> Vec<(HashMap<String, String>, Vec<u8>)> {
        let stream = self.js.get_stream("IM_DLQ").await.unwrap();
        let info = stream.get_info().await.unwrap();
        let mut letters = Vec::new();
        if info.state.messages == 0 {
            return letters;
        }
        for sequence in info.state.first_sequence..=info.state.last_sequence {
            if let Ok(message) = stream.get_raw_message(sequence).await {
                let headers = message
                    .headers
                    .iter()
                    .map(|(name, values)| {
                        (
                            name.to_string(),
                            values
                                .first()
                                .map(|v| v.as_str().to_string())
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                letters.push((headers, message.payload.to_vec()));
            }
        }
        letters
    }

    /// Wait for the dead letter whose original subject and payload match.
    pub async fn wait_dead_letter(
        &self,
        payload: &[u8],
        timeout: Duration,
    ) -> HashMap<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((headers, _)) = self
                .dead_letters()
                .await
                .into_iter()
                .find(|(_, body)| body == payload)
            {
                return headers;
            }
            assert!(
                Instant::now() < deadline,
                "no dead letter for {:?}",
                String::from_utf8_lossy(payload)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop every function gracefully.
    pub fn stop_functions(&mut self) {
        for process in self.processes() {
            process.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Keep a failed test's data and logs for a post-mortem.
        if std::thread::panicking() {
            let kept = self.system.keep();
            eprintln!("test failed: data and logs kept in {}", kept.display());
        }
    }
}

/// Poll `check` until it returns Some or the timeout passes.
pub async fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn users(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i:03}")).collect()
}

/// A stream's info, as JetStream has it now.
pub async fn stream_info(js: &jetstream::Context, name: &str) -> jetstream::stream::Info {
    js.get_stream(name)
        .await
        .expect("the stream exists")
        .info()
        .await
        .expect("its info")
        .clone()
}

/// A TLS client configuration that trusts only the CA certificate at `ca`.
pub fn tls_client(ca: &Path) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

pub fn token(user: &str, device: &str, ttl_secs: i64) -> String {
    im_gateway::auth::mint_device(
        JWT_SECRET,
        user,
        device,
        chrono::Utc::now().timestamp(),
        ttl_secs,
    )
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A device: a real WebSocket client.
pub struct Device {
    pub socket: Socket,
    /// Frames read while waiting for another op.
    pub backlog: std::collections::VecDeque<Value>,
    /// What a client keeps to show each message once: the message ids it
    /// has shown, and the `sync_seq` each one got (a message pushed from
    /// its commit comes first without one, then again with it).
    pub shown: HashMap<String, Option<u64>>,
}

impl Device {
    pub async fn connect(port: u16, user: &str, device: &str) -> Device {
        Self::try_connect(port, &token(user, device, 3600))
            .await
            .expect("websocket connects")
    }

    pub async fn try_connect(
        port: u16,
        token: &str,
    ) -> Result<Device, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://127.0.0.1:{port}/v1/ws?token={token}");
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Device::on(socket))
    }

    /// Connect over TLS (`wss://localhost`), trusting only the CA at `ca`.
    pub async fn try_connect_tls(
        port: u16,
        token: &str,
        ca: &Path,
    ) -> Result<Device, tokio_tungstenite::tungstenite::Error> {
        let url = format!("wss://localhost:{port}/v1/ws?token={token}");
        let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(tls_client(ca)));
        let (socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
                .await?;
        Ok(Device::on(socket))
    }

    fn on(socket: Socket) -> Device {
        Device {
            socket,
            backlog: Default::default(),
            shown: HashMap::new(),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        use futures::SinkExt;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .expect("send frame");
    }

    /// The next frame from the server, or None on close / timeout.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(frame) = self.backlog.pop_front() {
            return Some(frame);
        }
        loop {
            let message = tokio::time::timeout(timeout, self.socket.next())
                .await
                .ok()??
                .ok()?;
            match message {
                tokio_tungstenite::tungstenite::Message::Text(text) => {
                    return serde_json::from_str(&text).ok()
                }
                tokio_tungstenite::tungstenite::Message::Close(frame) => {
                    return Some(json!({"op": "closed", "code": frame.map(|f| u16::from(f.code))}))
                }
                _ => continue,
            }
        }
    }

    /// The next message this device has not shown yet, as a client shows
    /// it: a repeat of a message id (the fast path's frame, then the one
    /// with its `sync_seq`) is not shown again; its `sync_seq` is noted.
    /// Other frames are kept for later.
    pub async fn expect_message(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = self.next(left).await else {
                break None;
            };
            if frame["op"] != "message" {
                skipped.push(frame);
                continue;
            }
            let id = frame["message_id"].as_str().unwrap_or_default().to_string();
            let sync_seq = frame["sync_seq"].as_u64();
            match self.shown.get_mut(&id) {
                Some(known) => {
                    *known = known.or(sync_seq);
                }
                None => {
                    self.shown.insert(id, sync_seq);
                    break Some(frame);
                }
            }
        };
        for frame in skipped.into_iter().rev() {
            self.backlog.push_front(frame);
        }
        found.unwrap_or_else(|| {
            panic!(
                "no new message within {timeout:?}; other frames: {:?}",
                self.backlog
            )
        })
    }

    /// `count` new messages, in the order they were first shown, each with
    /// the `sync_seq` the device learnt for it (waiting for the frames that
    /// carry them if the first came from the fast path).
    pub async fn collect_messages(&mut self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut messages = Vec::with_capacity(count);
        for _ in 0..count {
            let left = deadline.saturating_duration_since(Instant::now());
            messages.push(self.expect_message(left).await);
        }
        let ids: Vec<String> = messages
            .iter()
            .map(|m| m["message_id"].as_str().unwrap_or_default().to_string())
            .collect();
        let mut others = Vec::new();
        while ids.iter().any(|id| self.shown[id].is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = self.next(left).await else {
                panic!("some of {count} messages never got a sync_seq within {timeout:?}");
            };
            if frame["op"] == "message" {
                let id = frame["message_id"].as_str().unwrap_or_default().to_string();
                let sync_seq = frame["sync_seq"].as_u64();
                let known = self.shown.entry(id).or_insert(None);
                *known = known.or(sync_seq);
            } else {
                others.push(frame);
            }
        }
        self.backlog.extend(others);
        for (message, id) in messages.iter_mut().zip(&ids) {
            message["sync_seq"] = json!(self.shown[id]);
        }
        messages
    }

    /// The next frame with this op; other frames are kept for later.
    pub async fn expect(&mut self, op: &str, timeout: Duration) -> Value {
        self.expect_where(op, timeout, |_| true).await
    }

    /// The next frame with this op for which `wanted` holds; other frames
    /// are kept for later, in order.
    pub async fn expect_where(
        &mut self,
        op: &str,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let found = self
            .next_where(timeout, |frame| frame["op"] == op && wanted(frame))
            .await;
        found.unwrap_or_else(|| {
            panic!(
                "no matching {op} frame within {timeout:?}; other frames: {:?}",
                self.backlog
            )
        })
    }

    /// The ack or the error that answers the send `client_msg_id`.
    pub async fn answer_to(&mut self, client_msg_id: &str, timeout: Duration) -> Value {
        let found = self
            .next_where(timeout, |frame| {
                frame["client_msg_id"] == client_msg_id
                    && (frame["op"] == "ack" || frame["op"] == "error")
            })
            .await;
        found.unwrap_or_else(|| panic!("no answer to {client_msg_id} within {timeout:?}"))
    }

    /// The first frame within `timeout` for which `wanted` holds; the
    /// others are put back, in order.
    async fn next_where(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = self.next(left).await else {
                break None;
            };
            if wanted(&frame) {
                break Some(frame);
            }
            skipped.push(frame);
        };
        for frame in skipped.into_iter().rev() {
            self.backlog.push_front(frame);
        }
        found
    }

    /// Frames with this op until `count` arrived.
    pub async fn collect(&mut self, op: &str, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut found = Vec::new();
        let mut others = Vec::new();
        while found.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = self.next(left).await else {
                break;
            };
            if frame["op"] == op {
                found.push(frame);
            } else {
                others.push(frame);
            }
        }
        self.backlog.extend(others);
        assert_eq!(
            found.len(),
            count,
            "only {} {op} frames within {timeout:?}",
            found.len()
        );
        found
    }

    /// Ask for the conversation list: the whole `conversations_result`
    /// and this conversation's row in it, if there is one.
    pub async fn conversation_row(&mut self, conversation: &str) -> (Value, Option<Value>) {
        self.send(json!({"op": "conversations"})).await;
        let list = self
            .expect("conversations_result", Duration::from_secs(20))
            .await;
        let row = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|row| row["conversation_id"] == conversation)
            .cloned();
        (list, row)
    }

    /// Sync from `after` in pages until has_more is false.
    pub async fn sync_all(&mut self, after: u64, page: usize) -> Vec<Value> {
        let mut cursor = after;
        let mut items = Vec::new();
        loop {
            self.send(json!({"op": "sync", "after": cursor, "limit": page}))
                .await;
            let result = self.expect("sync_result", Duration::from_secs(10)).await;
            items.extend(result["items"].as_array().unwrap().iter().cloned());
            cursor = result["next"].as_u64().unwrap();
            if result["has_more"] != json!(true) {
                return items;
            }
        }
    }
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port`: (status, body).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_full(port, method, path, bearer, headers, body).await;
    (status, body)
}

/// [`http`] with the response head too: (status, head, body).
pub async fn http_full(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(token) = bearer {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    (status, head, body)
}

pub fn service_token() -> String {
    im_gateway::auth::mint_service(SERVICE_SECRET, "ops", chrono::Utc::now().timestamp(), 600)
}

impl Pipeline {
    /// alice's and bob's phones, connected (to these gateway ports) and
    /// seen online, so pushes reach them.
    pub async fn online_pair(&self, alice_port: u16, bob_port: u16) -> (Device, Device) {
        let alice = Device::connect(alice_port, "alice", "phone").await;
        let bob = Device::connect(bob_port, "bob", "phone").await;
        self.wait_online(&[("alice", "phone"), ("bob", "phone")])
            .await;
        (alice, bob)
    }

    /// Wait until these devices are in the presence bucket, then a moment
    /// more for push's watch of it: pushes go only to devices seen online.
    pub async fn wait_online(&self, devices: &[(&str, &str)]) {
        let presence = loop {
            if let Ok(bucket) = self
                .js
                .get_key_value(im_events::subjects::PRESENCE_BUCKET)
                .await
            {
                break bucket;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for (user, device) in devices {
            let key = im_events::subjects::device_key(user, device);
            while presence.get(&key).await.ok().flatten().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "{user}/{device} never showed up in presence"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Run one of the SDK's node scripts (clients/js/dist/…) against the
/// system: it prints one JSON object per line. When it asks for
/// `{"event":"kill","gateway"}`, `kill` ends that gateway and the script is
/// told on its stdin. Returns the `done` event and the gateway killed, if
/// any; panics on `failed`, on silence past `timeout`, or when the script
/// exits without `done`.
pub fn run_node_script(
    script: &str,
    env: &[(&str, String)],
    timeout: Duration,
    mut kill: impl FnMut(&str),
) -> (Value, Option<String>) {
    use std::io::{BufRead, BufReader, Write};
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clients/js/dist")
        .join(script);
    assert!(
        path.exists(),
        "{} is missing: build the SDK first (cd clients/js && npm ci && npm run build; infra/test.sh does)",
        path.display()
    );
    let mut node = std::process::Command::new("node");
    node.arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    for (name, value) in env {
        node.env(name, value);
    }
    let mut node = node.spawn().expect("node runs (Node.js 20 or later)");
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
    let deadline = Instant::now() + timeout;
    let mut killed = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = seen.recv_timeout(left) else {
            let _ = node.kill();
            panic!("{script} said nothing for {left:?}, or ended without `done`");
        };
        eprintln!("{script}: {line}");
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        match event["event"].as_str() {
            Some("done") => {
                let status = node.wait().unwrap();
                assert!(status.success(), "{script}: {status:?}");
                return (event, killed);
            }
            Some("failed") => {
                let _ = node.kill();
                panic!("{script} failed: {line}");
            }
            Some("kill") => {
                let gateway = event["gateway"].as_str().unwrap_or_default().to_string();
                kill(&gateway);
                writeln!(stdin, "killed").unwrap();
                killed = Some(gateway);
            }
            _ => {}
        }
    }
}

/// One fetch of up to `max` messages from a pull consumer (waits 800 ms for
/// them), unacknowledged.
pub async fn fetch_batch(
    consumer: &async_nats::jetstream::consumer::PullConsumer,
    max: usize,
) -> Vec<async_nats::jetstream::Message> {
    use futures::StreamExt;
    let mut batch = consumer
        .fetch()
        .max_messages(max)
        .expires(Duration::from_millis(800))
        .messages()
        .await
        .unwrap();
    let mut messages = Vec::new();
    while let Some(Ok(message)) = batch.next().await {
        messages.push(message);
    }
    messages
}

/// Debian's Chromium for the browser tests (or `IM_CHROMIUM`).
pub fn chromium() -> String {
    let path = std::env::var("IM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium (apt-get install chromium; infra/test.sh does as root) or set IM_CHROMIUM"
    );
    path
}
