//! `imctl bench`: measurements against a running system (`imctl up`).
//!
//! Scenario `latency`: pairs of users on real WebSocket connections; each
//! sender sends at a fixed rate to its partner; measured per message are
//! send → ack (committed) and send → the partner's pushed `message` frame.
//! Results are percentiles; nothing is asserted, the machine is shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value = "latency")]
    pub scenario: String,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: String,
    /// The gateway's JWT secret; by default the one `imctl up` made in
    /// --data-dir.
    #[arg(long, env = "IM_JWT_SECRET")]
    pub secret: Option<String>,
    /// Data directory whose `credentials/jwt-secret` to use.
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,
    /// How long to send, e.g. 10s.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Sender/recipient pairs.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Messages per second over all pairs.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Durability profile of the system the suite starts: strict or relaxed.
    #[arg(long, default_value = "strict")]
    pub durability: im_harness::Durability,
    /// Partitions of the system the suite starts (default: schemas/streams.json).
    #[arg(long, env = "IM_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Streams every partitioned stream of the system the suite starts is
    /// split into (`IM_STREAM_SHARDS`): the broker fsyncs each stream's
    /// messages one by one, so shards are fsyncs side by side.
    #[arg(long, env = "IM_STREAM_SHARDS", default_value_t = 1)]
    pub shards: u32,
    /// Replicas of every function in the system the suite starts (they
    /// share the partitions).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Scenario tiers: messages to write.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Scenario tiers: history page size.
    #[arg(long, default_value_t = 50)]
    pub page: usize,
    /// Scenario connections (and all): idle WebSocket connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Scenario fanout (and all): group members, and how many are online.
    #[arg(long, default_value_t = 10_000)]
    pub group_members: usize,
    #[arg(long, default_value_t = 1_000)]
    pub online_members: usize,
    /// Scenario recovery (and all): messages a device missed.
    #[arg(long, default_value_t = 10_000)]
    pub missed: usize,
}

/// Latency samples as a histogram (hdrhistogram, nanoseconds, three
/// significant digits): bounded memory however long a run is, and the same
/// quantiles in every report.
#[derive(Clone)]
pub struct Latencies(hdrhistogram::Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(hdrhistogram::Histogram::new(3).expect("three significant digits are valid"))
    }
}

impl FromIterator<Duration> for Latencies {
    fn from_iter<I: IntoIterator<Item = Duration>>(samples: I) -> Self {
        let mut latencies = Latencies::default();
        for sample in samples {
            latencies.record(sample);
        }
        latencies
    }
}

impl Latencies {
    pub fn record(&mut self, sample: Duration) {
        let nanos = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX).max(1);
        // Auto-resizing: a value is never out of range.
        let _ = self.0.record(nanos);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile (0..=1); None without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        (!self.is_empty()).then(|| Duration::from_nanos(self.0.value_at_quantile(q)))
    }

    /// `{"n", "p50", "p99", "p99.9"}`, in milliseconds to two decimals
    /// (null without samples).
    pub fn summary(&self) -> serde_json::Value {
        let ms = |q: f64| {
            self.quantile(q)
                .map(|d| serde_json::json!((d.as_secs_f64() * 100_000.0).round() / 100.0))
                .unwrap_or(serde_json::Value::Null)
        };
        serde_json::json!({"n": self.len(), "p50": ms(0.5), "p99": ms(0.99), "p99.9": ms(0.999)})
    }
}

use crate::ws::Socket;

async fn connect(args: &BenchArgs, user: &str) -> crate::Result<Socket> {
    let token = im_gateway::auth::mint_device(
        &im_runtime::secrets::resolve(args.secret.as_deref(), &args.data_dir)?,
        user,
        "bench",
        chrono::Utc::now().timestamp(),
        3600,
    );
    let url = format!("ws://{}/v1/ws?token={token}", args.gateway);
    crate::ws::connect(&url).await.map_err(|e| {
        crate::failed!("connect to {url}: {e}; is `imctl up` running with the same --secret?")
    })
}

#[derive(Default)]
struct Samples {
    sent: HashMap<String, Instant>,
    ack: Latencies,
    push: Latencies,
    errors: u64,
}

pub async fn run(args: BenchArgs) -> crate::Result<()> {
    // The suite starts its own system: every scenario but `latency` alone
    // (which measures a running one) and `tiers`; a list such as
    // `throughput,latency` runs those on one system.
    let suite = [
        "all",
        "baseline",
        "throughput",
        "fanout",
        "connections",
        "recovery",
    ];
    if suite.contains(&args.scenario.as_str()) || args.scenario.contains(',') {
        return crate::bench_suite::suite(&args).await;
    }
    if args.scenario == "tiers" {
        let (messages, page, as_json) = (args.messages, args.page.max(1), args.json);
        let figures =
            tokio::task::spawn_blocking(move || crate::bench_tiers::measure(messages, page))
                .await??;
        crate::bench_tiers::report(&figures, as_json);
        return Ok(());
    }
    crate::ensure_failed!(
        args.scenario == "latency",
        "unknown scenario {:?}; available: all, baseline, throughput, latency, fanout, connections, recovery, tiers",
        args.scenario
    );
    let seconds = im_runtime::config::parse_duration_secs(&args.duration)?.max(1) as u64;
    let run_id = chrono::Utc::now().timestamp_millis();
    let samples = Arc::new(Mutex::new(Samples::default()));
    let mut senders = Vec::new();
    for pair in 0..args.pairs {
        let from = format!("bench{run_id}s{pair}");
        let to = format!("bench{run_id}r{pair}");
        let conversation = im_events::ids::direct_conversation_id(&from, &to);
        let sender = connect(&args, &from).await?;
        let receiver = connect(&args, &to).await?;
        let (sink, mut acks) = sender.split();
        let (_receiver_sink, mut pushes) = receiver.split();
        let ack_samples = samples.clone();
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = acks.next().await {
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let mut samples = ack_samples.lock().unwrap_or_else(|p| p.into_inner());
                let id = frame["client_msg_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                match frame["op"].as_str() {
                    Some("ack") => {
                        if let Some(sent) = samples.sent.get(&id).copied() {
                            samples.ack.record(sent.elapsed());
                        }
                    }
                    Some("error") => samples.errors += 1,
                    _ => {}
                }
            }
        });
        let push_samples = samples.clone();
        tokio::spawn(async move {
            // The first frame of each message counts (the fast path's; the
            // one with its sync_seq follows).
            let mut seen = std::collections::HashSet::new();
            while let Some(Ok(Message::Text(text))) = pushes.next().await {
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if frame["op"] != "message" {
                    continue;
                }
                let id = frame["body"]["id"].as_str().unwrap_or_default().to_string();
                if !seen.insert(id.clone()) {
                    continue;
                }
                let mut samples = push_samples.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(sent) = samples.sent.get(&id).copied() {
                    samples.push.record(sent.elapsed());
                }
            }
        });
        senders.push((sink, conversation));
    }
    // Let presence settle so the first pushes are not missed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let total = (args.rate * seconds as f64) as usize;
    let started = Instant::now();
    let mut next = Instant::now();
    for n in 0..total {
        let (sink, conversation) = &mut senders[n % args.pairs];
        let id = format!("b{n}");
        let frame = json!({"op": "send", "conversation_id": conversation, "client_msg_id": id, "kind": "text", "body": {"text": "bench", "id": id}});
        samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sent
            .insert(id, Instant::now());
        sink.send(Message::Text(frame.to_string().into())).await?;
        if n % (args.rate as usize).max(1) == 0 && !args.json {
            eprint!(
                "\rbench: {n}/{total} sent, {:.0}s",
                started.elapsed().as_secs_f64()
            );
        }
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    // Wait for stragglers, at most 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let done = {
            let samples = samples.lock().unwrap_or_else(|p| p.into_inner());
            samples.push.len() + samples.errors >= total as u64
                && samples.ack.len() + samples.errors >= total as u64
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !args.json {
        eprintln!();
    }
    let samples = Arc::try_unwrap(samples)
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_else(|shared| {
            let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *guard)
        });
    let report = json!({
        "scenario": "latency", "pairs": args.pairs, "rate_per_sec": args.rate, "seconds": seconds,
        "sent": total, "acked": samples.ack.len(), "pushed": samples.push.len(), "errors": samples.errors,
        "send_to_ack_ms": samples.ack.summary(),
        "send_to_push_ms": samples.push.summary(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("scenario latency: {} pairs, {} msg/s for {seconds}s: sent {total}, acked {}, pushed {}, errors {}", args.pairs, args.rate, samples.ack.len(), samples.push.len(), samples.errors);
        println!("{:<16} {:>10} {:>10} {:>10}", "ms", "p50", "p99", "p99.9");
        for (name, key) in [
            ("send -> ack", "send_to_ack_ms"),
            ("send -> push", "send_to_push_ms"),
        ] {
            let row = &report[key];
            println!(
                "{name:<16} {:>10} {:>10} {:>10}",
                row["p50"].to_string(),
                row["p99"].to_string(),
                row["p99.9"].to_string()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
