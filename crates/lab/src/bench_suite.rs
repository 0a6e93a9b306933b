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
mod latency;
mod resources;
mod throughput;
pub use latency::*;
pub use resources::*;
pub use throughput::*;

pub static SECRET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(im_runtime::secrets::generate);

/// Start the system the suite measures: one node (the shipped `nats.conf`
/// under `durability`), every function, one gateway, in a scratch directory.
pub async fn start_system(
    durability: Durability,
    partitions: Option<u32>,
    shards: u32,
    replicas: usize,
    extra_env: &[(&str, &str)],
) -> crate::Result<System> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut builder = System::builder();
    if let Some(partitions) = partitions {
        builder = builder.partitions(partitions);
    }
    let system = builder
        .shards(shards)
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

use crate::ws::Socket;

pub async fn device(port: u16, user: &str) -> crate::Result<Socket> {
    let token =
        im_gateway::auth::mint_device(&SECRET, user, "bench", chrono::Utc::now().timestamp(), 7200);
    let url = format!("ws://127.0.0.1:{port}/v1/ws?token={token}");
    Ok(crate::ws::connect(&url).await?)
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

async fn stream_messages(js: &jetstream::Context) -> crate::Result<u64> {
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

/// Run the scenarios `args.scenario` names (all: every one) on a system
/// started for the purpose, and print the figures with the baseline.
pub async fn suite(args: &crate::bench::BenchArgs) -> crate::Result<()> {
    let seconds = im_runtime::config::parse_duration_secs(&args.duration)?.max(1) as u64;
    // `all`, or a comma-separated list (`throughput,latency`).
    let wants = |name: &str| {
        args.scenario == "all" || args.scenario.split(',').any(|wanted| wanted == name)
    };
    eprintln!("bench: starting a system (nats-server, every function, the gateway)");
    let mut system = start_system(
        args.durability,
        args.partitions,
        args.shards,
        args.replicas,
        &[("IM_LARGE_GROUP_THRESHOLD", "500")],
    )
    .await?;
    let machine = json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "durability": args.durability.as_str(),
        "partitions": system.partitions,
        "shards": args.shards,
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
