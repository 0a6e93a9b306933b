//! The access gateway: WebSocket sessions for devices and the HTTP API.
//!
//! The gateway holds connections and nothing durable. A `send` becomes an
//! `im.message.send` CloudEvent published to JetStream with a reply subject;
//! dedupe answers on it once the message is committed, and only then does the
//! device get its `ack`. Pushed frames arrive on the core subjects
//! `im.gw.<gateway>.user.<user>`: push reads from presence which gateway
//! holds a user's devices, and each gateway subscribes once, for all its
//! users (a subscription per user would cost a channel and a task per idle
//! connection). A dead gateway leaves nothing behind to drain (devices that
//! miss a push sync from their cursor). Presence lives in the KV bucket
//! `IM_PRESENCE` (user.device → gateway), refreshed while connected and
//! expiring with a dead gateway. Typing goes to every gateway at once
//! (`im.gw.all`, with the users it is for).

pub mod access;
pub mod auth;
pub mod frames;
pub mod http;
pub mod limits;
pub mod outbox;
pub mod presence;
pub mod push_tokens;
pub mod session;
mod submit;
pub mod tls;
pub mod web;

pub(crate) use submit::storage_full;
pub use submit::{set_trace, Pending, Refusal};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use im_events::Verdict;
use im_runtime::lease::kv_bucket;
use im_store::{ConversationStore, NotificationStore, UserStore};
use serde_json::{json, Value};
use tokio::sync::oneshot;

#[derive(Debug, Clone)]
pub struct Config {
    /// The keys tokens are checked with.
    pub keys: auth::KeySettings,
    pub gateway_id: String,
    pub max_frame_bytes: usize,
    pub messages_per_second: f64,
    pub burst: f64,
    pub max_connections_per_user: usize,
    pub idle_timeout: Duration,
    pub ack_timeout: Duration,
    pub presence_ttl: Duration,
    /// Read and write buffer of each WebSocket (the frame limit still
    /// applies; buffers grow for larger frames and shrink back).
    pub ws_buffer_bytes: usize,
    /// Bytes of output one connection may have queued before it is closed
    /// as a slow consumer.
    pub max_queued_bytes: usize,
    /// How long one write to a socket may take before the connection is
    /// closed as a slow consumer.
    pub write_timeout: Duration,
    /// Largest history or sync reply, bytes (pages are cut to fit; the
    /// client pages on).
    pub max_reply_bytes: usize,
    /// Devices one user may have push registrations for.
    pub max_push_devices: usize,
    pub data_dir: PathBuf,
    /// Where clients reach this gateway's WebSocket (`ws://host:port/v1/ws`),
    /// as `GET /v1/connect` names it.
    pub public_url: String,
    /// How `GET /v1/connect` picks a gateway.
    pub connect_strategy: access::Strategy,
    /// This gateway's weight for `weighted_random`.
    pub weight: u32,
    /// Over how long a draining gateway closes its sessions.
    pub drain_period: Duration,
    /// The built web app (`clients/js/dist`), served at `/app/`.
    pub app_dir: Option<PathBuf>,
    /// Development only: `POST /v1/dev/token` mints a token for any name.
    pub dev_tokens: bool,
}

impl Config {
    pub fn for_tests(jwt_secret: &str, data_dir: PathBuf) -> Self {
        Config {
            keys: auth::KeySettings {
                user_secret: Some(jwt_secret.to_string()),
                ..Default::default()
            },
            gateway_id: format!("gw-{}", std::process::id()),
            max_frame_bytes: 1024 * 1024,
            messages_per_second: 50.0,
            burst: 100.0,
            max_connections_per_user: 10,
            idle_timeout: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(30),
            presence_ttl: Duration::from_secs(30),
            ws_buffer_bytes: 4 * 1024,
            max_queued_bytes: 8 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            max_reply_bytes: 1024 * 1024,
            max_push_devices: 20,
            data_dir,
            public_url: String::new(),
            connect_strategy: access::Strategy::LeastConnections,
            weight: 1,
            drain_period: Duration::from_secs(10),
            app_dir: None,
            dev_tokens: false,
        }
    }
}

pub use im_events::subjects::{device_key as kv_key, DELIVERED_BUCKET, PRESENCE_BUCKET};

/// One device connection, as the rest of the gateway sees it.
pub struct Connection {
    pub id: u64,
    pub device: String,
    pub source: String,
    pub outbox: outbox::Outbox,
    /// Sends of this connection waiting for their verdict: a draining
    /// gateway answers them before it closes the connection.
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

struct UserEntry {
    connections: Vec<Connection>,
}

pub struct Gateway {
    pub config: Config,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub conversations: Arc<dyn ConversationStore>,
    pub users: Arc<dyn UserStore>,
    pub presence: kv::Store,
    pub delivered: kv::Store,
    /// Device push registrations, followed by the offline function.
    pub push_tokens: kv::Store,
    /// The offline function's notification log (read-only).
    pub notifications: Arc<dyn NotificationStore>,
    /// Presence for clients: who is online, last seen, subscriptions.
    pub presence_hub: Arc<presence::PresenceHub>,
    /// The access layer: this gateway's registration, everyone's view.
    pub registry: Arc<access::Registry>,
    /// Set on SIGTERM: no new sessions; the open ones are closed in turn.
    pub draining: std::sync::atomic::AtomicBool,
    /// Checks every token, with the key its header names.
    pub verifier: auth::Verifier,
    sessions: Mutex<HashMap<String, UserEntry>>,
    /// Every user's write budget, WebSocket and HTTP alike.
    writes: limits::WriteLimit,
    /// Sends waiting for their verdict, by reply token: the reply as it
    /// came (read once, by the waiter, as a `Verdict`).
    pending: Mutex<HashMap<String, oneshot::Sender<bytes::Bytes>>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Reply tokens: this process's random prefix and a counter. A token
    /// is never reused by a restarted gateway of the same id (a verdict
    /// still on its way to the one before must not answer a new send),
    /// and a send costs no call for randomness (`getrandom` was one system
    /// call per send).
    reply_tokens: (String, std::sync::atomic::AtomicU64),
    pub metrics: Option<metrics_exporter::Handle>,
}

/// Presence refreshes in flight at once.
const PRESENCE_REFRESH_CONCURRENCY: usize = 256;

/// The Prometheus render handle, if this process installed the recorder.
pub mod metrics_exporter {
    pub type Handle = Box<dyn Fn() -> String + Send + Sync>;
}

impl Gateway {
    pub async fn new(
        config: Config,
        client: async_nats::Client,
        conversations: Arc<dyn ConversationStore>,
        users: Arc<dyn UserStore>,
        notifications: Arc<dyn NotificationStore>,
        metrics: Option<metrics_exporter::Handle>,
    ) -> im_runtime::Result<Arc<Gateway>> {
        im_runtime::ensure_config!(
            !config.gateway_id.is_empty()
                && !config
                    .gateway_id
                    .contains(|c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace()),
            "gateway id {:?} must be one NATS subject token (no '.', '*', '>' or spaces); choose another --instance",
            config.gateway_id
        );
        let js = jetstream::new(client.clone());
        im_runtime::topology::ensure_streams(&js).await?;
        let presence = im_runtime::presence::bucket(&js, config.presence_ttl).await?;
        let delivered = kv_bucket(
            &js,
            DELIVERED_BUCKET,
            "per-device delivery cursor (sync_seq)",
            None,
        )
        .await?;
        let push_tokens = kv_bucket(
            &js,
            im_events::subjects::PUSH_TOKENS_BUCKET,
            "device push registrations: user.device -> provider and token",
            None,
        )
        .await?;
        let presence_hub = presence::PresenceHub::start(&js, config.presence_ttl).await?;
        let registry = access::Registry::start(&js, config.connect_strategy).await?;
        let writes = limits::WriteLimit::new(config.messages_per_second, config.burst);
        let verifier = auth::Verifier::new(config.keys.clone())?;
        let gateway = Arc::new(Gateway {
            verifier,
            config,
            client,
            js,
            conversations,
            users,
            presence,
            delivered,
            push_tokens,
            notifications,
            presence_hub,
            registry,
            draining: std::sync::atomic::AtomicBool::new(false),
            writes,
            sessions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            reply_tokens: (
                uuid::Uuid::new_v4().simple().to_string(),
                std::sync::atomic::AtomicU64::new(0),
            ),
            metrics,
        });
        gateway.clone().start_reply_listener().await?;
        gateway.clone().start_push_listener().await?;
        tokio::spawn(gateway.clone().refresh_presence());
        let weak = Arc::downgrade(&gateway);
        let registry = gateway.registry.clone();
        gateway.registry.announce(&gateway.registration()).await;
        tokio::spawn(
            registry.keep_announcing(move || weak.upgrade().map(|gateway| gateway.registration())),
        );
        Ok(gateway)
    }

    /// What this gateway says of itself in the registry.
    pub fn registration(&self) -> access::Registration {
        access::Registration {
            id: self.config.gateway_id.clone(),
            url: self.config.public_url.clone(),
            connections: self.connection_count(),
            draining: self.draining.load(std::sync::atomic::Ordering::Acquire),
            weight: self.config.weight.max(1),
        }
    }

    /// Open WebSocket sessions on this gateway.
    pub fn connection_count(&self) -> u64 {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.values().map(|e| e.connections.len() as u64).sum()
    }

    /// SIGTERM: refuse new sessions, tell the registry (so `/v1/connect`
    /// sends clients elsewhere), then close the open sessions with 1001 one
    /// after another over `drain_period` — each once its sends in flight
    /// are answered — so their clients reconnect to the other gateways
    /// spread out, not all at once. Returns when every session is closed.
    pub async fn drain(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        self.draining.store(true, Ordering::Release);
        self.registry.announce(&self.registration()).await;
        let connections: Vec<(outbox::Outbox, Arc<std::sync::atomic::AtomicUsize>)> = {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions
                .values()
                .flat_map(|e| e.connections.iter())
                .map(|c| (c.outbox.clone(), c.in_flight.clone()))
                .collect()
        };
        let count = connections.len().max(1) as u32;
        tracing::info!(sessions = connections.len(), period = ?self.config.drain_period, "draining: closing sessions");
        let started = tokio::time::Instant::now();
        for (index, (outbox, in_flight)) in connections.into_iter().enumerate() {
            tokio::time::sleep_until(started + self.config.drain_period * index as u32 / count)
                .await;
            let answered_by = tokio::time::Instant::now() + self.config.ack_timeout;
            while in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < answered_by
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let frame = json!({"op": "error", "code": "going_away",
                               "message": "this gateway is shutting down: reconnect (GET /v1/connect names another) and resend what is not acked"});
            outbox.close(Some(&frame), 1001, "gateway draining");
        }
        // Give the last closes a moment to go out, then leave the registry.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.registry.withdraw(&self.config.gateway_id).await;
    }

    /// A reply token no other send of any gateway process has had.
    pub(crate) fn reply_token(&self) -> String {
        let (prefix, counter) = &self.reply_tokens;
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}{n:x}")
    }

    fn reply_prefix(&self) -> String {
        format!("im.gw.{}.reply", self.config.gateway_id)
    }

    /// Frames for the users this gateway holds (`im.gw.<gateway>.frames`,
    /// from push and dedupe) and for lists of users sent to every gateway
    /// (`im.gw.all`, typing): handed to the users' connections here.
    async fn start_push_listener(self: Arc<Self>) -> im_runtime::Result<()> {
        let mut pushes = self
            .client
            .subscribe(im_events::subjects::gateway_frames_subject(
                &self.config.gateway_id,
            ))
            .await
            .map_err(|error| im_runtime::nats_error!("subscribe to pushes: {error}"))?;
        let mut broadcasts = self
            .client
            .subscribe(im_events::subjects::GATEWAY_BROADCAST_SUBJECT)
            .await
            .map_err(|error| im_runtime::nats_error!("subscribe to broadcasts: {error}"))?;
        let gateway = Arc::downgrade(&self);
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    Some(message) = pushes.next() => message,
                    Some(message) = broadcasts.next() => message,
                    else => break,
                };
                let Some(gateway) = gateway.upgrade() else {
                    break;
                };
                let _span =
                    im_runtime::trace::from_headers(message.headers.as_ref()).and_then(|parent| {
                        im_runtime::trace::stage_span("gateway.push", Some(&parent), None, None, 1)
                    });
                gateway.hand_over_batch(&message.payload);
            }
        });
        Ok(())
    }

    /// Send an ephemeral frame (typing) for `users` to every gateway; each
    /// hands it to the connections of those users it holds.
    pub async fn broadcast(&self, users: &[String], frame: &Value) {
        if users.is_empty() {
            return;
        }
        let frame = frame.to_string();
        let Ok(payload) = im_events::frames::gateway_frames_payload(&[(users, &frame)]) else {
            return;
        };
        let _ = self
            .client
            .publish(
                im_events::subjects::GATEWAY_BROADCAST_SUBJECT,
                payload.into(),
            )
            .await;
    }

    /// Hand each frame of a batch (`im.gw.<gateway>.frames` or `im.gw.all`)
    /// to its users' connections here. A batch that does not read, or a frame in it that
    /// is not a frame, is counted and dropped, as a single push would be.
    fn hand_over_batch(&self, payload: &[u8]) {
        let Ok(batch) = serde_json::from_slice::<im_events::frames::GatewayFrames>(payload) else {
            metrics::counter!("im_gateway_unreadable_pushes_total").increment(1);
            return;
        };
        for entry in batch.frames {
            let Some(frame) = frames::pushed(entry.frame.get().as_bytes()) else {
                metrics::counter!("im_gateway_unreadable_pushes_total").increment(1);
                continue;
            };
            for user in &entry.users {
                self.hand_over(user, &frame);
            }
        }
    }

    /// Give a pushed frame to every connection of the user here, except a
    /// message back to the device that sent it.
    fn hand_over(&self, user: &str, frame: &frames::Pushed) {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = sessions.get(user) else {
            return;
        };
        for connection in &entry.connections {
            if frame.origin.as_deref() != Some(connection.source.as_str()) {
                // Past its bound a device is closed as slow; it reconnects
                // and syncs.
                let _ = connection.outbox.push_text(frame.text.clone());
            }
        }
    }

    /// Replies from the pipeline, routed to the waiting request by token.
    async fn start_reply_listener(self: Arc<Self>) -> im_runtime::Result<()> {
        let mut subscription = self
            .client
            .subscribe(format!("{}.*", self.reply_prefix()))
            .await
            .map_err(|error| im_runtime::nats_error!("subscribe to verdicts: {error}"))?;
        let gateway = Arc::downgrade(&self);
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let Some(gateway) = gateway.upgrade() else {
                    break;
                };
                let token = message
                    .subject
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let waiter = gateway
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&token);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(message.payload);
                }
            }
        });
        Ok(())
    }

    pub fn connect(
        self: &Arc<Self>,
        user: &str,
        device: &str,
        source: &str,
        outbox: outbox::Outbox,
        in_flight: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Result<u64, String> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = sessions.get(user) {
            if entry.connections.len() >= self.config.max_connections_per_user {
                return Err(format!(
                    "{user} already has {} connections",
                    entry.connections.len()
                ));
            }
        }
        let entry = sessions
            .entry(user.to_string())
            .or_insert_with(|| UserEntry {
                connections: Vec::new(),
            });
        entry.connections.push(Connection {
            id,
            device: device.to_string(),
            source: source.to_string(),
            outbox,
            in_flight,
        });
        metrics::gauge!("im_gateway_connections").increment(1.0);
        drop(sessions);
        let presence = self.presence.clone();
        let key = kv_key(user, device);
        let value = im_runtime::presence::presence_value(user, device, &self.config.gateway_id);
        let (hub, who) = (self.presence_hub.clone(), user.to_string());
        tokio::spawn(async move {
            let _ = presence.put(key, value.into()).await;
            hub.seen([who]).await;
        });
        Ok(id)
    }

    pub fn disconnect(&self, user: &str, device: &str, id: u64) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let mut device_still_connected = false;
        let mut user_left = false;
        if let Some(entry) = sessions.get_mut(user) {
            entry.connections.retain(|c| c.id != id);
            device_still_connected = entry.connections.iter().any(|c| c.device == device);
            if entry.connections.is_empty() {
                sessions.remove(user);
                user_left = true;
            }
        }
        self.presence_hub.drop_connection(id);
        if user_left {
            let (hub, who) = (self.presence_hub.clone(), user.to_string());
            tokio::spawn(async move { hub.seen([who]).await });
        }
        metrics::gauge!("im_gateway_connections").decrement(1.0);
        drop(sessions);
        if !device_still_connected {
            let presence = self.presence.clone();
            let key = kv_key(user, device);
            tokio::spawn(async move {
                let _ = presence.delete(key).await;
            });
        }
    }

    /// One write by `user`, over any path: allowed, or refused with how
    /// long to wait.
    pub fn check_write(&self, user: &str) -> Result<(), Duration> {
        let checked = self.writes.check(user);
        if checked.is_err() {
            metrics::counter!("im_gateway_rate_limited_total").increment(1);
        }
        checked
    }

    /// Keep presence entries alive while their devices are connected.
    async fn refresh_presence(self: Arc<Self>) {
        let every = self.config.presence_ttl / 3;
        loop {
            tokio::time::sleep(every).await;
            self.writes.forget_idle();
            let devices: Vec<(String, String)> = {
                let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                sessions
                    .iter()
                    .flat_map(|(user, entry)| {
                        entry
                            .connections
                            .iter()
                            .map(move |c| (user.clone(), c.device.clone()))
                    })
                    .collect()
            };
            // Many at once: one at a time, a gateway with 100,000 devices
            // would take longer than the TTL (each put is a round trip) and
            // its devices would flicker offline.
            futures::stream::iter(devices)
                .for_each_concurrent(PRESENCE_REFRESH_CONCURRENCY, |(user, device)| {
                    let value = im_runtime::presence::presence_value(
                        &user,
                        &device,
                        &self.config.gateway_id,
                    );
                    let presence = &self.presence;
                    async move {
                        let _ = presence.put(kv_key(&user, &device), value.into()).await;
                    }
                })
                .await;
            // When each user was last online, for `presence` after they
            // leave (or after this gateway dies).
            let users: Vec<String> = {
                let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                sessions.keys().cloned().collect()
            };
            let hub = &self.presence_hub;
            futures::stream::iter(users)
                .for_each_concurrent(PRESENCE_REFRESH_CONCURRENCY, |user| async move {
                    hub.seen([user]).await
                })
                .await;
        }
    }
}

/// The CloudEvents source of a device's events: (source, client_msg_id) is
/// the identity that makes a resend the same message. Refused for ids that
/// would make it ambiguous.
pub fn device_source(user: &str, device: &str) -> Result<String, im_events::EventError> {
    im_events::ids::device_source(user, device)
}
