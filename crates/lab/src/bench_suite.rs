//! The benchmark suite (`imctl bench --scenario all|baseline|throughput|
//! latency|fanout|connections|recovery`): it starts its own single-node
//! system (nats-server with the production `nats.conf`, every function, the
//! gateway) in a scratch directory, measures the broker's own limits in the
//! same run, then the pipeline against them. Nothing is asserted: the
//! machine is shared; figures are ratios against the same-run baseline.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::bench::Latencies;
use im_harness::{Durability, System};

/// A fresh secret per run: these systems are made and thrown away.
pub static SECRET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(im_runtime::secrets::generate);

/// Start the system the suite measures: one node (the shipped `nats.conf`
/// under `durability`), every function, one gateway, in a scratch directory.
pub async fn start_system(
    durability: Durability,
    partitions: Option<u32>,
    replicas: usize,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<System> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut builder = System::builder();
    if let Some(partitions) = partitions {
        builder = builder.partitions(partitions);
    }
    let system = builder
        .durability(durability)
        .replicas(replicas)
        .bin_dir(bin_dir)
        .log("warn")
        .jwt_secret(SECRET.as_str())
        .env("IM_RATE_PER_SECOND", "100000")
        .env("IM_RATE_BURST", "100000")
        .env("IM_IDLE_TIMEOUT_SECS", "3600")
        .envs(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .start()
        .await?;
    // Leases are taken a moment after start (and shared out, with replicas).
    tokio::time::sleep(Duration::from_secs(if replicas > 1 { 8 } else { 2 })).await;
    Ok(system)
}

fn gateway_pid(system: &mut System) -> Option<u32> {
    system.proc("gateway").and_then(|p| p.pid())
}

/// User + system CPU time of a process so far, in clock ticks
/// (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields after it are plain.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU time of every process of the system (nats-server included), by name.
#[derive(Clone, Default)]
pub struct CpuSample(Vec<(String, bool, u64)>);

pub fn cpu_sample(system: &System) -> CpuSample {
    CpuSample(
        system
            .procs
            .iter()
            .filter_map(|p| {
                let pid = p.pid()?;
                Some((
                    p.name.clone(),
                    p.kind == im_harness::Kind::Nats,
                    cpu_ticks(pid)?,
                ))
            })
            .collect(),
    )
}

/// CPU per message between two samples: all processes, the broker's share
/// apart, and each process's.
pub fn cpu_per_message(before: &CpuSample, after: &CpuSample, messages: u64) -> Value {
    let per_tick_us = 1_000_000.0 / clock_ticks_per_second();
    let messages = messages.max(1) as f64;
    let mut total = 0.0;
    let mut broker = 0.0;
    let mut by_process = serde_json::Map::new();
    for (name, is_nats, ticks) in &after.0 {
        let start = before
            .0
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, t)| *t)
            .unwrap_or(*ticks);
        let us = ticks.saturating_sub(start) as f64 * per_tick_us / messages;
        total += us;
        if *is_nats {
            broker += us;
        }
        by_process.insert(name.clone(), json!((us * 10.0).round() / 10.0));
    }
    json!({
        "cpu_us_per_message": total.round(),
        "broker_cpu_us_per_message": broker.round(),
        "pipeline_cpu_us_per_message": (total - broker).round(),
        "cpu_us_per_message_by_process": by_process,
    })
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn device(port: u16, user: &str) -> anyhow::Result<Socket> {
    let token =
        im_gateway::auth::mint_device(&SECRET, user, "bench", chrono::Utc::now().timestamp(), 7200);
    let url = format!("ws://127.0.0.1:{port}/v1/ws?token={token}");
    let (socket, _) = tokio_tungstenite::connect_async(&url).await?;
    Ok(socket)
}

/// A structured send event as services publish it (the baseline's payload).
pub fn send_event(id: &str, conversation: &str, sender: &str) -> Vec<u8> {
    json!({"specversion": "1.0", "id": id, "source": "urn:bench", "type": "im.message.send",
           "datacontenttype": "application/json", "time": "2026-01-01T00:00:00.000Z",
           "data": {"conversation_id": conversation, "sender_id": sender, "kind": "text",
                    "body": {"text": "benchmark message of typical length, about sixty characters"}}})
    .to_string()
    .into_bytes()
}

async fn stream_messages(js: &jetstream::Context) -> anyhow::Result<u64> {
    let mut total = 0;
    for name in im_runtime::topology::pipeline_streams(js).await? {
        total += js.get_stream(name).await?.info().await?.state.messages;
    }
    Ok(total)
}

fn ms(d: Option<Duration>) -> Value {
    d.map(|d| json!((d.as_secs_f64() * 100_000.0).round() / 100.0))
        .unwrap_or(Value::Null)
}

fn quantiles(samples: Vec<Duration>) -> Value {
    samples.into_iter().collect::<Latencies>().summary()
}

/// The broker's own limits on the same server: JetStream persisted publish
/// rate (async acks, file storage, same sync policy) and core pub/sub.
pub async fn baseline(system: &System, seconds: u64) -> anyhow::Result<Value> {
    let js = system.js().await?;
    let payload = bytes::Bytes::from(send_event("baseline", "dm:a:b", "a"));
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: "BENCH_BASELINE".into(),
            subjects: vec!["bench.js".into()],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut acked = 0u64;
    let mut pending = std::collections::VecDeque::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        pending.push_back(js.publish("bench.js", payload.clone()).await?);
        if pending.len() >= 256 {
            pending.pop_front().expect("non-empty").await?;
            acked += 1;
        }
    }
    for future in pending {
        future.await?;
        acked += 1;
    }
    let js_rate = acked as f64 / started.elapsed().as_secs_f64();
    drop(stream);
    let _ = js.delete_stream("BENCH_BASELINE").await;
    // Core NATS: one publisher, one subscriber.
    let client = system.client("imctl-bench-core").await?;
    let mut subscription = client.subscribe("bench.core").await?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        while subscription.next().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    let mut published = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..100 {
            client.publish("bench.core", payload.clone()).await?;
        }
        published += 100;
        client.flush().await?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let core_rate = received.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    reader.abort();
    Ok(
        json!({"payload_bytes": payload.len(), "jetstream_publish_per_sec": js_rate.round(), "core_pubsub_per_sec": core_rate.round()}),
    )
}

/// 1:1 at saturation: pairs of real WebSocket clients, each sender keeping
/// `window` sends unacknowledged, its partner online.
pub async fn throughput(
    system: &System,
    pairs: usize,
    window: usize,
    seconds: u64,
) -> anyhow::Result<Value> {
    let js = system.js().await?;
    let before = stream_messages(&js).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let pushed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = chrono::Utc::now().timestamp_millis();
    let mut tasks = Vec::new();
    for pair in 0..pairs {
        let (from, to) = (format!("t{run}s{pair}"), format!("t{run}r{pair}"));
        let conversation = im_events::ids::direct_conversation_id(&from, &to);
        let sender = device(system.gateway_port(), &from).await?;
        let receiver = device(system.gateway_port(), &to).await?;
        let (_, mut incoming) = receiver.split();
        let counter = pushed.clone();
        tasks.push(tokio::spawn(async move {
            // Delivered: a message in the recipient's sync log and pushed
            // with its sync_seq (the fast path's earlier frame is not counted).
            while let Some(Ok(Message::Text(text))) = incoming.next().await {
                if text.as_str().contains("\"op\":\"message\"")
                    && text.as_str().contains("\"sync_seq\"")
                {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        let (mut sink, mut acks) = sender.split();
        let permits = Arc::new(tokio::sync::Semaphore::new(window));
        let (release, counted, failed) = (permits.clone(), acked.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = acks.next().await {
                if text.as_str().contains("\"op\":\"ack\"") {
                    counted.fetch_add(1, Ordering::Relaxed);
                    release.add_permits(1);
                } else if text.as_str().contains("\"op\":\"error\"") {
                    failed.fetch_add(1, Ordering::Relaxed);
                    release.add_permits(1);
                }
            }
        }));
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(permit) = permits.acquire().await else { break };
                permit.forget();
                n += 1;
                let frame = json!({"op": "send", "conversation_id": conversation, "client_msg_id": format!("{pair}-{n}"), "kind": "text", "body": {"text": "benchmark message of typical length, about sixty characters"}});
                if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acked_at_start, pushed_at_start) = (
        acked.load(Ordering::Relaxed),
        pushed.load(Ordering::Relaxed),
    );
    let cpu_before = cpu_sample(system);
    let started = Instant::now();
    for second in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprint!(
            "\rthroughput: {}s/{seconds}s, {} acked",
            second + 1,
            acked.load(Ordering::Relaxed)
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_sample(system);
    let backlog = consumer_backlog(&js).await;
    let (acked_n, pushed_n) = (
        acked.load(Ordering::Relaxed) - acked_at_start,
        pushed.load(Ordering::Relaxed) - pushed_at_start,
    );
    let cpu = cpu_per_message(&cpu_before, &cpu_after, acked_n);
    stop.store(true, Ordering::Relaxed);
    eprintln!();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for task in tasks {
        task.abort();
    }
    let after = stream_messages(&js).await?;
    let total_acked = acked.load(Ordering::Relaxed).max(1);
    let mut report = json!({
        "pairs": pairs, "window": window, "seconds": seconds,
        "acked_per_sec": (acked_n as f64 / elapsed).round(),
        "delivered_per_sec": (pushed_n as f64 / elapsed).round(),
        "errors": errors.load(Ordering::Relaxed),
        "stream_writes_per_message": ((after - before) as f64 / total_acked as f64 * 100.0).round() / 100.0,
        "backlog_at_end_by_function": backlog,
    });
    merge(&mut report, cpu);
    Ok(report)
}

/// Messages waiting per function (summed over its partitions): where a
/// saturated pipeline queues up.
async fn consumer_backlog(js: &jetstream::Context) -> Value {
    let mut backlog: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for name in im_runtime::topology::pipeline_streams(js)
        .await
        .unwrap_or_default()
    {
        let Ok(stream) = js.get_stream(name).await else {
            continue;
        };
        let mut consumers = stream.consumers();
        while let Some(Ok(info)) = consumers.next().await {
            let function = info.name.split('-').next().unwrap_or_default().to_string();
            *backlog.entry(function).or_default() += info.num_pending + info.num_ack_pending as u64;
        }
    }
    json!(backlog)
}

/// Let the pipeline drain what an earlier scenario left, so figures do
/// not carry over.
async fn drain(system: &System) -> anyhow::Result<()> {
    let js = system.js().await?;
    eprintln!("bench: waiting for the pipeline to drain");
    if let Err(busy) = crate::quiesce::quiesce(&js, Duration::from_secs(300)).await {
        eprintln!(
            "bench: the pipeline did not drain in 300 s ({}); figures that follow include its backlog",
            busy.join(", ")
        );
    }
    Ok(())
}

/// Latency at a fixed offered rate: send → ack and send → push (online
/// partner), and send → visible in the sync log of an offline recipient.
fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// Raw JetStream publish → ack latency at a fixed rate on the same server
/// (one stream, the same payload and sync policy): what one persisted hop
/// costs, next to the pipeline's send → push.
pub async fn publish_latency(system: &System, rate: f64, seconds: u64) -> anyhow::Result<Value> {
    let js = system.js().await?;
    let payload = bytes::Bytes::from(send_event("raw", "dm:a:b", "a"));
    let name = format!("BENCH_LATENCY_{}", chrono::Utc::now().timestamp_millis());
    js.get_or_create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("bench.latency.{name}")],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let subject = format!("bench.latency.{name}");
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let total = (rate * seconds as f64) as usize;
    let mut next = Instant::now();
    let mut waits = Vec::with_capacity(total);
    for _ in 0..total {
        let at = Instant::now();
        let ack = js.publish(subject.clone(), payload.clone()).await?;
        let samples = samples.clone();
        waits.push(tokio::spawn(async move {
            if ack.await.is_ok() {
                samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(at.elapsed());
            }
        }));
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    for wait in waits {
        let _ = wait.await;
    }
    let _ = js.delete_stream(&name).await;
    let taken = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(json!({"rate_per_sec": rate, "publish_to_ack_ms": quantiles(taken)}))
}

pub async fn latency(
    system: &System,
    rate: f64,
    pairs: usize,
    seconds: u64,
) -> anyhow::Result<Value> {
    let pairs = pairs.max(1);
    let run = chrono::Utc::now().timestamp_millis();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let acks: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let pushes: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut sinks = Vec::new();
    let mut tasks = Vec::new();
    for pair in 0..pairs {
        let (from, to) = (format!("l{run}s{pair}"), format!("l{run}r{pair}"));
        let conversation = im_events::ids::direct_conversation_id(&from, &to);
        let (sink, mut ack_stream) = device(system.gateway_port(), &from).await?.split();
        let (_, mut push_stream) = device(system.gateway_port(), &to).await?.split();
        let (sent_a, acks_a) = (sent.clone(), acks.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = ack_stream.next().await {
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if frame["op"] == "ack" {
                    if let Some(at) = sent_a
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(frame["client_msg_id"].as_str().unwrap_or_default())
                    {
                        acks_a
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(at.elapsed());
                    }
                }
            }
        }));
        let (sent_p, pushes_p) = (sent.clone(), pushes.clone());
        tasks.push(tokio::spawn(async move {
            // The first frame of each message counts (the fast path's; the
            // one with its sync_seq follows).
            let mut seen = std::collections::HashSet::new();
            while let Some(Ok(Message::Text(text))) = push_stream.next().await {
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if frame["op"] == "message"
                    && seen.insert(frame["message_id"].as_str().unwrap_or_default().to_string())
                {
                    if let Some(at) = sent_p
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(frame["body"]["id"].as_str().unwrap_or_default())
                    {
                        pushes_p
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(at.elapsed());
                    }
                }
            }
        }));
        sinks.push((sink, conversation));
    }
    // Offline recipients: nobody connects as them; their sync log is read
    // from the store.
    let offline: Vec<(String, String)> = (0..3)
        .map(|n| {
            let (from, to) = (format!("l{run}s{n}"), format!("l{run}o{n}"));
            (im_events::ids::direct_conversation_id(&from, &to), to)
        })
        .collect();
    let visible: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (sent, visible, watching, data_dir) = (
            sent.clone(),
            visible.clone(),
            watching.clone(),
            system.data_dir.clone(),
        );
        let users: Vec<String> = offline.iter().map(|(_, u)| u.clone()).collect();
        tokio::task::spawn_blocking(move || {
            let Ok(store) = im_store::sqlite::users_in(&data_dir, None) else {
                return;
            };
            let mut cursors: HashMap<String, u64> = HashMap::new();
            while watching.load(Ordering::Relaxed) {
                for user in &users {
                    let after = cursors.get(user).copied().unwrap_or(0);
                    let Ok(items) = im_store::UserStore::sync_items(&store, user, after, 100)
                    else {
                        continue;
                    };
                    for item in items {
                        cursors.insert(user.clone(), item.sync_seq);
                        if let Some(at) = sent
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(item.item["body"]["id"].as_str().unwrap_or_default())
                        {
                            visible
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(at.elapsed());
                        }
                    }
                }
                // Every 2 ms: finer polling made this watcher (the load
                // client, not the system) one of the busiest processes.
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let total = (rate * seconds as f64) as usize;
    let cpu_before = cpu_sample(system);
    let mut next = Instant::now();
    for n in 0..total {
        let id = format!("lat{n}");
        let to_offline = n % 10 == 9;
        let slot = n % pairs;
        let conversation = if to_offline {
            offline[n % offline.len()].0.clone()
        } else {
            sinks[slot].1.clone()
        };
        let sink = if to_offline {
            &mut sinks[n % offline.len()].0
        } else {
            &mut sinks[slot].0
        };
        let frame = json!({"op": "send", "conversation_id": conversation, "client_msg_id": id, "kind": "text", "body": {"text": "bench", "id": id}});
        sent.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Instant::now());
        sink.send(Message::Text(frame.to_string().into())).await?;
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_after = cpu_sample(system);
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.await;
    for task in tasks {
        task.abort();
    }
    let take = |v: &Arc<Mutex<Vec<Duration>>>| {
        std::mem::take(&mut *v.lock().unwrap_or_else(|p| p.into_inner()))
    };
    let mut report = json!({
        "rate_per_sec": rate, "pairs": pairs, "seconds": seconds, "sent": total,
        "send_to_ack_ms": quantiles(take(&acks)),
        "send_to_push_ms": quantiles(take(&pushes)),
        "send_to_offline_sync_ms": quantiles(take(&visible)),
    });
    merge(
        &mut report,
        cpu_per_message(&cpu_before, &cpu_after, total as u64),
    );
    Ok(report)
}

/// A group of `members` with `online` of them connected: send → the last
/// online member's push, and the stream writes each message costs, here and
/// for a group below the read-diffusion threshold.
pub async fn fanout(
    system: &System,
    members: usize,
    online: usize,
    messages: usize,
) -> anyhow::Result<Value> {
    let js = system.js().await?;
    let run = chrono::Utc::now().timestamp_millis();
    let member = |n: usize| format!("f{run}m{n}");
    let sender = format!("f{run}sender");
    let create = |id: &str, conversation: &str, users: Vec<String>, kind: &str| {
        let data = if kind == "create" {
            json!({"conversation_id": conversation, "kind": "group", "members": users})
        } else {
            json!({"conversation_id": conversation, "members": users})
        };
        let event_type = if kind == "create" {
            "im.conversation.create"
        } else {
            "im.conversation.members.add"
        };
        (im_events::subjects::ingest_subject_for(event_type, &data), json!({"specversion": "1.0", "id": id, "source": "urn:bench", "type": event_type, "datacontenttype": "application/json", "data": data}).to_string())
    };
    let big = format!("g:fan{run}");
    let small = format!("g:fansmall{run}");
    let mut all: Vec<String> = (0..members.saturating_sub(1)).map(member).collect();
    all.insert(0, sender.clone());
    for (index, chunk) in all.chunks(2000).enumerate() {
        let (subject, body) = create(
            &format!("fan-{run}-{index}"),
            &big,
            chunk.to_vec(),
            if index == 0 { "create" } else { "add" },
        );
        js.publish(subject, body.into()).await?.await?;
    }
    let small_members: Vec<String> = all.iter().take(400).cloned().collect();
    let (subject, body) = create(&format!("fansmall-{run}"), &small, small_members, "create");
    js.publish(subject, body.into()).await?.await?;
    // Online members, each on its own connection.
    let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let mut readers = Vec::new();
    eprint!("fanout: connecting {online} members");
    for n in 0..online {
        let (_, mut stream) = device(system.gateway_port(), &member(n)).await?.split();
        let arrivals = arrivals.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = stream.next().await {
                if let Some(at) = text.as_str().find("\"fanout-probe-") {
                    let id: String = text.as_str()[at + 1..]
                        .chars()
                        .take_while(|c| *c != '"')
                        .collect();
                    arrivals
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(id)
                        .or_default()
                        .push(Instant::now());
                }
            }
        }));
    }
    eprintln!();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut socket_sink, _) = device(system.gateway_port(), &sender).await?.split();
    let deliveries = |js: jetstream::Context| async move {
        let mut total = 0;
        for name in im_runtime::topology::pipeline_streams(&js).await? {
            if im_runtime::topology::base_name(&name) == "IM_DELIVERY" {
                total += js.get_stream(name).await?.info().await?.state.messages;
            }
        }
        Ok::<u64, anyhow::Error>(total)
    };
    let mut sent_at = HashMap::new();
    let before = deliveries(js.clone()).await?;
    for n in 0..messages {
        let id = format!("fanout-probe-{n}");
        let frame = json!({"op": "send", "conversation_id": big, "client_msg_id": id, "kind": "text", "body": {"text": id}});
        sent_at.insert(id, Instant::now());
        socket_sink
            .send(Message::Text(frame.to_string().into()))
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let big_writes = (deliveries(js.clone()).await? - before) as f64 / messages.max(1) as f64;
    let before = deliveries(js.clone()).await?;
    for n in 0..5 {
        let frame = json!({"op": "send", "conversation_id": small, "client_msg_id": format!("small-{n}"), "kind": "text", "body": {"text": "x"}});
        socket_sink
            .send(Message::Text(frame.to_string().into()))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let small_writes = (deliveries(js.clone()).await? - before) as f64 / 5.0;
    for reader in readers {
        reader.abort();
    }
    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner());
    let mut last = Vec::new();
    let mut reached = Vec::new();
    for (id, at) in &sent_at {
        let got = arrivals.get(id).cloned().unwrap_or_default();
        reached.push(got.len());
        if let Some(latest) = got.iter().max() {
            last.push(latest.duration_since(*at));
        }
    }
    Ok(json!({
        "members": members, "online": online, "messages": messages,
        "online_reached_min": reached.iter().min(), "send_to_last_online_push_ms": quantiles(last),
        "read_diffusion": {"delivery_writes_per_message": big_writes, "sync_rows_per_message": 1},
        "write_diffusion_400": {"delivery_writes_per_message": small_writes, "sync_rows_per_message": 400},
    }))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `count` idle connections on the gateway, from several 127.0.0.x source
/// addresses: resident memory per connection and connect rate.
pub async fn connections(system: &mut System, count: usize) -> anyhow::Result<Value> {
    let pid = gateway_pid(system).ok_or_else(|| anyhow::anyhow!("no gateway pid"))?;
    let before = rss_kib(pid).unwrap_or(0);
    let run = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(count);
    let port = system.gateway_port();
    for chunk in (0..count).collect::<Vec<_>>().chunks(200) {
        let attempts = chunk.iter().map(|n| {
            let n = *n;
            async move {
                let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (n / 20_000) as u8);
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind((source, 0).into())?;
                let stream = socket.connect(([127, 0, 0, 1], port).into()).await?;
                let token = im_gateway::auth::mint_device(
                    &SECRET,
                    &format!("idle{run}u{n}"),
                    "d",
                    chrono::Utc::now().timestamp(),
                    7200,
                );
                let url = format!("ws://127.0.0.1:{port}/v1/ws?token={token}");
                let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
                anyhow::Ok(ws)
            }
        });
        for result in futures::future::join_all(attempts).await {
            sockets.push(result?);
        }
        eprint!("\rconnections: {}/{count}", sockets.len());
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid).unwrap_or(0);
    drop(sockets);
    Ok(json!({
        "connections": count, "connect_per_sec": (count as f64 / connect_secs).round(),
        "gateway_rss_before_kib": before, "gateway_rss_after_kib": after,
        "kib_per_connection": ((after.saturating_sub(before)) as f64 / count.max(1) as f64 * 100.0).round() / 100.0,
    }))
}

/// A device offline for `messages` messages: time to sync them all.
pub async fn recovery(system: &System, messages: usize) -> anyhow::Result<Value> {
    let js = system.js().await?;
    let run = chrono::Utc::now().timestamp_millis();
    let (from, to) = (format!("r{run}a"), format!("r{run}b"));
    let conversation = im_events::ids::direct_conversation_id(&from, &to);
    let mut pending = std::collections::VecDeque::new();
    for n in 0..messages {
        let body = send_event(&format!("rec-{run}-{n}"), &conversation, &from);
        pending.push_back(
            js.publish(
                im_events::subjects::keyed_ingest_subject("im.message.send", &conversation),
                body.into(),
            )
            .await?,
        );
        if pending.len() >= 256 {
            pending.pop_front().expect("non-empty").await?;
        }
    }
    for future in pending {
        future.await?;
    }
    let users = im_store::sqlite::users_in(&system.data_dir, None)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let head = im_store::UserStore::last_sync_seq(&users, &to)?;
        eprint!("\rrecovery: {head}/{messages} committed for the offline device");
        if head as usize >= messages || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!();
    let mut socket = device(system.gateway_port(), &to).await?;
    let started = Instant::now();
    let mut after = 0u64;
    let mut received = 0usize;
    loop {
        socket
            .send(Message::Text(
                json!({"op": "sync", "after": after, "limit": 1000})
                    .to_string()
                    .into(),
            ))
            .await?;
        let page = loop {
            let Some(Ok(Message::Text(text))) = socket.next().await else {
                anyhow::bail!("connection ended during sync")
            };
            let value: Value = serde_json::from_str(&text)?;
            if value["op"] == "sync_result" {
                break value;
            }
        };
        received += page["items"].as_array().map(Vec::len).unwrap_or(0);
        after = page["next"].as_u64().unwrap_or(after);
        if page["has_more"] != json!(true) {
            break;
        }
    }
    Ok(
        json!({"messages": messages, "received": received, "sync_seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0}),
    )
}

/// Run the scenarios `args.scenario` names (all: every one) on a system
/// started for the purpose, and print the figures with the baseline.
pub async fn suite(args: &crate::bench::BenchArgs) -> anyhow::Result<()> {
    let seconds = im_runtime::config::parse_duration_secs(&args.duration)?.max(1) as u64;
    // `all`, or a comma-separated list (`throughput,latency`).
    let wants = |name: &str| {
        args.scenario == "all" || args.scenario.split(',').any(|wanted| wanted == name)
    };
    eprintln!("bench: starting a system (nats-server, every function, the gateway)");
    let mut system = start_system(
        args.durability,
        args.partitions,
        args.replicas,
        &[("IM_LARGE_GROUP_THRESHOLD", "500")],
    )
    .await?;
    let machine = json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "durability": args.durability.as_str(),
        "partitions": system.partitions,
        "replicas": args.replicas,
        "nats_sync": args.durability.nats_sync_interval(),
        "sqlite": match args.durability { Durability::Strict => "synchronous=FULL", Durability::Relaxed => "synchronous=NORMAL, WAL fsynced every 100 ms" },
    });
    let mut report = json!({"machine": machine});
    if wants("baseline") || wants("throughput") || wants("latency") {
        eprintln!("bench: broker baseline ({}s each)", seconds.min(10));
        report["baseline"] = baseline(&system, seconds.min(10)).await?;
    }
    if wants("throughput") {
        eprintln!("bench: 1:1 throughput at saturation ({seconds}s)");
        let figures = throughput(&system, 20, 16, seconds).await?;
        let writes = figures["stream_writes_per_message"]
            .as_f64()
            .unwrap_or(1.0)
            .max(1.0);
        let base = report["baseline"]["jetstream_publish_per_sec"]
            .as_f64()
            .unwrap_or(1.0);
        report["throughput"] = figures;
        report["throughput"]["ratio_to_baseline_per_write"] = json!(
            ((report["throughput"]["acked_per_sec"]
                .as_f64()
                .unwrap_or(0.0)
                / (base / writes))
                * 1000.0)
                .round()
                / 1000.0
        );
    }
    if wants("latency") {
        // The fixed rates: 100/s over 10 pairs, 1,000/s over 40
        // pairs (25/s each, inside the default per-user limit), each next
        // to a raw JetStream publish at the same rate.
        for (rate, pairs) in [(100.0, 10usize), (1000.0, 40)] {
            drain(&system).await?;
            eprintln!("bench: raw JetStream publish latency at {rate:.0}/s ({seconds}s)");
            let raw = publish_latency(&system, rate, seconds).await?;
            drain(&system).await?;
            eprintln!("bench: latency at {rate:.0}/s over {pairs} pairs ({seconds}s)");
            let mut figures = latency(&system, rate, pairs, seconds).await?;
            figures["raw_publish_to_ack_ms"] = raw["publish_to_ack_ms"].clone();
            report[format!("latency_{rate:.0}")] = figures;
        }
    }
    if wants("fanout") {
        drain(&system).await?;
        eprintln!(
            "bench: group fanout ({} members, {} online)",
            args.group_members, args.online_members
        );
        report["fanout"] = fanout(&system, args.group_members, args.online_members, 30).await?;
    }
    if wants("connections") {
        eprintln!("bench: {} idle connections", args.connections);
        report["connections"] = connections(&mut system, args.connections).await?;
    }
    if wants("recovery") {
        drain(&system).await?;
        eprintln!("bench: a device offline for {} messages", args.missed);
        report["recovery"] = recovery(&system, args.missed).await?;
    }
    drop(system);
    if args.scenario == "all" {
        eprintln!("bench: history tiers");
        let figures =
            tokio::task::spawn_blocking(|| crate::bench_tiers::measure(100_000, 50)).await??;
        report["tiers"] = json!({
            "hot_bytes_per_message": figures.hot_bytes_per_message, "cold_bytes_per_message": figures.cold_bytes_per_message,
            "hot_page_ms": {"p50": ms(Some(figures.hot_read.0)), "p99": ms(Some(figures.hot_read.1))},
            "cold_page_ms": {"p50": ms(Some(figures.cold_read.0)), "p99": ms(Some(figures.cold_read.1))},
        });
    }
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &Value) {
    let row = |name: &str, value: String| println!("{name:<46} {value}");
    if let Some(b) = report.get("baseline") {
        row(
            "baseline: JetStream persisted publishes/s",
            b["jetstream_publish_per_sec"].to_string(),
        );
        row(
            "baseline: core NATS pub/sub msgs/s",
            b["core_pubsub_per_sec"].to_string(),
        );
    }
    if let Some(t) = report.get("throughput") {
        row(
            "1:1 acked/s (delivered/s)",
            format!("{} ({})", t["acked_per_sec"], t["delivered_per_sec"]),
        );
        row(
            "stream writes per 1:1 message",
            t["stream_writes_per_message"].to_string(),
        );
        row(
            "ratio: acked/s ÷ (baseline ÷ writes)",
            t["ratio_to_baseline_per_write"].to_string(),
        );
        row(
            "backlog when the load stopped, by function",
            t["backlog_at_end_by_function"].to_string(),
        );
    }
    if let Some(t) = report.get("throughput") {
        row(
            "CPU µs per message: all / broker / pipeline",
            format!(
                "{} / {} / {}",
                t["cpu_us_per_message"],
                t["broker_cpu_us_per_message"],
                t["pipeline_cpu_us_per_message"]
            ),
        );
    }
    for rate in [100, 1000] {
        if let Some(l) = report.get(format!("latency_{rate}")) {
            for (what, key) in [
                ("raw publish->ack", "raw_publish_to_ack_ms"),
                ("send->ack", "send_to_ack_ms"),
                ("send->push", "send_to_push_ms"),
                ("send->offline sync", "send_to_offline_sync_ms"),
            ] {
                let q = &l[key];
                row(
                    &format!("{rate}/s ({} pairs) {what} ms p50/p99/p99.9", l["pairs"]),
                    format!("{} / {} / {}", q["p50"], q["p99"], q["p99.9"]),
                );
            }
            row(
                &format!("{rate}/s CPU µs per message: all / broker"),
                format!(
                    "{} / {}",
                    l["cpu_us_per_message"], l["broker_cpu_us_per_message"]
                ),
            );
        }
    }
    if let Some(f) = report.get("fanout") {
        let q = &f["send_to_last_online_push_ms"];
        row(
            &format!(
                "fanout {} members, {} online: last push ms p50/p99",
                f["members"], f["online"]
            ),
            format!("{} / {}", q["p50"], q["p99"]),
        );
        row(
            "fanout: delivery writes/msg read vs write (400)",
            format!(
                "{} vs {}",
                f["read_diffusion"]["delivery_writes_per_message"],
                f["write_diffusion_400"]["delivery_writes_per_message"]
            ),
        );
    }
    if let Some(c) = report.get("connections") {
        row(
            &format!(
                "{} idle connections: KiB each, connects/s",
                c["connections"]
            ),
            format!(
                "{} KiB, {}/s",
                c["kib_per_connection"], c["connect_per_sec"]
            ),
        );
    }
    if let Some(r) = report.get("recovery") {
        row(
            &format!("offline device syncs {} messages in s", r["messages"]),
            r["sync_seconds"].to_string(),
        );
    }
    if let Some(t) = report.get("tiers") {
        row(
            "history bytes/msg hot / cold",
            format!(
                "{:.0} / {:.0}",
                t["hot_bytes_per_message"].as_f64().unwrap_or(0.0),
                t["cold_bytes_per_message"].as_f64().unwrap_or(0.0)
            ),
        );
    }
}
