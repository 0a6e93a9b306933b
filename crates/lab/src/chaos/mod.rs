//! `imctl chaos`: the system on a 3-node JetStream cluster with two replicas
//! of every function and two gateways, under steady 1:1 and group traffic
//! from real WebSocket clients, while random processes are SIGKILLed (a
//! function replica, a gateway, a NATS node) and restarted, or paused with
//! SIGSTOP and resumed. Then a verifier checks every acked message:
//! delivered to every member's device exactly once, in seq order, unread
//! counts exact, no seq gap or repeat. It prints a summary and exits
//! non-zero on any violation.

mod clients;
mod faults;
mod verify;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Args;
use futures::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use clients::*;
use im_harness::{Durability, Kind, System};

#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long to run load and faults, e.g. 90s or 15m (longer, up to twice
    /// this, if a kind of fault has not been made yet).
    #[arg(long, default_value = "15m")]
    pub duration: String,
    /// Mean time between faults.
    #[arg(long, default_value = "4s")]
    pub fault_every: String,
    /// Leave out the scale faults (replicas joining and leaving).
    #[arg(long)]
    pub no_scale: bool,
    /// Users (each one device); pairs chat 1:1 and everyone is in one group.
    #[arg(long, default_value_t = 8)]
    pub users: usize,
    /// Messages per second over all users.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Partition lease TTL: failover takes about this long.
    #[arg(long, default_value_t = 2000)]
    pub lease_ttl_ms: u64,
    /// Where the run's data and logs go (default: a new temp dir, kept).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Random seed (default: from the clock); the summary prints it.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Users who never connect: members of the group, each with a direct
    /// conversation, and a push token (a local webhook) for one device;
    /// every acked message to them must be notified exactly once.
    #[arg(long, default_value_t = 2)]
    pub offline_users: usize,
    /// Durability profile: relaxed (R3 plus 100 ms syncs, the cluster's
    /// usual choice) or strict (every message synced on every node).
    #[arg(long, default_value = "relaxed")]
    pub durability: Durability,
    /// Partitions of every partitioned stage (default: schemas/streams.json).
    #[arg(long, env = "IM_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Streams each partitioned stage is split into (default: one per NATS
    /// node, so the faults hit shard leaders on every node).
    #[arg(long, env = "IM_STREAM_SHARDS", default_value_t = 3)]
    pub shards: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A fresh secret per run: these systems are made and thrown away.
static SECRET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(im_runtime::secrets::generate);

pub async fn run(args: ChaosArgs) -> crate::Result<()> {
    let duration =
        Duration::from_secs(im_runtime::config::parse_duration_secs(&args.duration)?.max(1) as u64);
    let fault_every = Duration::from_secs(
        im_runtime::config::parse_duration_secs(&args.fault_every)?.max(1) as u64,
    );
    let seed = args
        .seed
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis() as u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("im-chaos-{seed}")),
    };
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    // The push provider: a webhook receiver that records every notification.
    let received = webhook::Received::default();
    let webhook_url = webhook::start(received.clone()).await?;
    eprintln!(
        "chaos: seed {seed}, data {}, durability {}, started {}",
        data_dir.display(),
        args.durability,
        chrono::Utc::now().format("%H:%M:%S%.3f")
    );
    // The cluster: 3 NATS nodes, R3 everything, two replicas of every
    // function, two gateways.
    let mut builder = System::builder();
    if let Some(partitions) = args.partitions {
        builder = builder.partitions(partitions);
    }
    let mut system = builder
        .cluster(3)
        .shards(args.shards)
        .replicas(2)
        .gateways(2)
        .durability(args.durability)
        .data_dir(&data_dir)
        .bin_dir(bin_dir)
        .jwt_secret(SECRET.as_str())
        .env("IM_LEASE_TTL_MS", args.lease_ttl_ms.to_string())
        .env("IM_RATE_PER_SECOND", "1000")
        .env("IM_PRESENCE_TTL_SECS", "5")
        .env("IM_WEBHOOK_URL", webhook_url)
        .env("IM_WEBHOOK_SECRET", "chaos-webhook-secret")
        .env("IM_NOTIFY_WINDOW_MS", "1000")
        .start()
        .await?;
    let data_dir = system.data_dir.clone();
    let logs = system.logs.clone();
    let gateway_ports: Vec<u16> = system.gateways.iter().map(|g| g.port).collect();
    let client = system.client("imctl-chaos").await?;
    let js = jetstream::new(client);
    let mut members: Vec<String> = (0..args.users).map(|n| format!("c{n}")).collect();
    members.extend((0..args.offline_users).map(|n| format!("o{n}")));
    let create = json!({"specversion": "1.0", "id": "chaos-group", "source": "urn:chaos", "type": "im.conversation.create",
                        "datacontenttype": "application/json", "data": {"conversation_id": "g:chaos", "kind": "group", "members": members}});
    js.publish(
        im_events::subjects::ingest_subject_for("im.conversation.create", &create["data"]),
        create.to_string().into(),
    )
    .await?
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let offline_devices: Vec<verify::OfflineDevice> = (0..args.offline_users)
        .map(|n| verify::OfflineDevice {
            user: format!("o{n}"),
            device: OFFLINE_DEVICE.to_string(),
            conversations: vec!["g:chaos".to_string(), offline_direct(n)],
        })
        .collect();
    for device in &offline_devices {
        register_push(&gateway_ports, &device.user).await?;
    }
    // The offline function follows the registrations in KV: give it a
    // moment to see them before the first message is due.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Load.
    let book = Arc::new(Mutex::new(Book::default()));
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = Load {
        users: args.users,
        offline_users: args.offline_users,
        per_second: args.rate / args.users.max(1) as f64,
        ports: gateway_ports.to_vec(),
        book: book.clone(),
        sending: sending.clone(),
        done: done.clone(),
    };
    let clients: Vec<_> = (0..args.users)
        .map(|index| tokio::spawn(device(index, load.clone())))
        .collect();

    // Faults.
    let started = Instant::now();
    let mut faults = faults::Faults::new(&args, &js, started).await;
    // Until the duration is up and every kind of fault was made once: a
    // round that waits for the cluster to be whole (a leader kill) can
    // leave a short run without its last kinds; it may run on for at most
    // as long again to make them.
    loop {
        let end = if faults.covered() {
            duration
        } else {
            duration * 2
        };
        if started.elapsed() >= end {
            break;
        }
        let wait = fault_every.mul_f64(rng.random_range(0.5..1.5));
        tokio::time::sleep(wait.min(end.saturating_sub(started.elapsed()))).await;
        if started.elapsed() >= end {
            break;
        }
        faults.round(&mut system, &mut rng).await?;
    }
    faults.restore(&mut system)?;
    for proc in system.procs.iter_mut() {
        if !proc.running() {
            proc.spawn()?;
        }
    }
    // Stop new sends; let resends finish.
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pending = {
            let book = book.lock().unwrap_or_else(|p| p.into_inner());
            book.ledger
                .sent
                .keys()
                .filter(|id| !book.ledger.acked.contains_key(*id))
                .count()
        };
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), client).await;
    }
    let settled = crate::quiesce::quiesce(&js, Duration::from_secs(120)).await;

    // Verify.
    let ledger = book
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .ledger
        .clone();
    let mut violations: Vec<String> = Vec::new();
    if let Err(busy) = settled {
        violations.push(format!(
            "the pipeline did not settle within 120 s after the load; still busy: {}",
            busy.join(", ")
        ));
    }
    // Notifications: the last window of every conversation closes a
    // second after its last message; wait until the receiver has them all
    // (or a minute), before any offline user connects to be read back.
    let notify_deadline = Instant::now() + Duration::from_secs(60);
    let mut ignored = Vec::new();
    while verify::verify_notifications(&ledger, &offline_devices, &received.notices(), &mut ignored)
        .missing
        > 0
        && Instant::now() < notify_deadline
    {
        ignored.clear();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let notifications = verify::verify_notifications(
        &ledger,
        &offline_devices,
        &received.notices(),
        &mut violations,
    );
    for body in received
        .unreadable
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .take(5)
    {
        violations.push(format!(
            "the push receiver got something that is not a notification: {body}"
        ));
    }
    let mut readbacks = Vec::new();
    let readers = (0..args.users)
        .map(|n| {
            (
                format!("c{n}"),
                conversations_of(n, args.users, args.offline_users),
            )
        })
        .chain(
            offline_devices
                .iter()
                .map(|device| (device.user.clone(), device.conversations.clone())),
        );
    for (user, conversations) in readers {
        match read_user(&gateway_ports, &user).await {
            Ok((items, list)) => readbacks.push(verify::Readback {
                user,
                conversations,
                items,
                list,
            }),
            Err(error) => {
                violations.push(format!("{user}: cannot read the device's view: {error}"))
            }
        }
    }
    let verified = verify::verify_deliveries(&ledger, &readbacks, &mut violations);
    violations.sort();
    violations.dedup();
    let summary = json!({
        "seed": seed,
        "duration_secs": duration.as_secs(),
        "sent": ledger.sent.len(),
        "acked": ledger.acked.len(),
        "verified_deliveries": verified,
        "notifications": notifications.notifications,
        "verified_notified_messages": notifications.verified,
        "notifications_resent": notifications.resent,
        "resends": ledger.resends,
        "error_frames": ledger.errors,
        "error_samples": ledger.error_samples,
        "faults": faults.counts,
        "max_failover_ms": faults.max_failover.as_millis() as u64,
        "violations": violations.len(),
        "first_violations": violations.iter().take(20).collect::<Vec<_>>(),
        "data_dir": data_dir.display().to_string(),
    });
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    // Stop everything that uses NATS first, then NATS.
    tokio::task::spawn_blocking(move || system.shutdown()).await?;
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "chaos: {}s, seed {seed}: sent {}, acked {}, verified {} deliveries, {} notifications covering {} messages to offline devices ({} resent with the same id), {} resends, faults {}, max failover {} ms, error frames {}, violations {}",
            duration.as_secs(),
            summary["sent"], summary["acked"], verified, notifications.notifications, notifications.verified, notifications.resent, ledger.resends, summary["faults"], summary["max_failover_ms"], summary["error_frames"], violations.len()
        );
        for violation in violations.iter().take(20) {
            println!("  violation: {violation}");
        }
    }
    crate::ensure_failed!(
        violations.is_empty(),
        "{} violations; logs in {}",
        violations.len(),
        logs.display()
    );
    if args.data_dir.is_some() {
        return Ok(());
    }
    if keep_for_errors(&summary) {
        // Clients were told to retry: the logs say which stage held their
        // sends, and when.
        eprintln!(
            "chaos: error frames {}; data and logs kept in {}",
            summary["error_frames"],
            logs.display()
        );
    } else {
        // A clean run's scratch data is not worth keeping.
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}

/// Whether a run's scratch data is kept although nothing was violated:
/// when clients got error frames.
fn keep_for_errors(summary: &Value) -> bool {
    summary["error_frames"]
        .as_object()
        .is_some_and(|errors| errors.values().any(|count| count.as_u64() > Some(0)))
}

/// Every stream and the lease bucket have a leader and every replica is
/// current. A 3-node cluster survives one node down; a node restarted a few
/// seconds ago may still be catching up, and killing another then is two
/// failures at once (soak #5: a kill 7 s after a restart left IM_INGEST
/// without quorum for ~20 s). So chaos takes a NATS node down only when the
/// cluster is whole again.
/// Whether [`cluster_whole`] is seen within `patience` (sampled every
/// 200 ms).
async fn cluster_whole_within(js: &jetstream::Context, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if cluster_whole(js).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cluster_whole(js: &jetstream::Context) -> bool {
    let Ok(mut streams) = im_runtime::topology::pipeline_streams(js).await else {
        return false;
    };
    if streams.is_empty() {
        return false;
    }
    streams.push(format!("KV_{}", im_events::subjects::LEASE_BUCKET));
    for name in streams {
        let Ok(mut stream) = js.get_stream(&name).await else {
            return false;
        };
        let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), stream.info()).await else {
            return false;
        };
        let Some(cluster) = info.cluster.as_ref() else {
            return false;
        };
        if cluster.leader.is_none()
            || cluster
                .replicas
                .iter()
                .any(|peer| !peer.current || peer.offline)
        {
            return false;
        }
    }
    true
}

/// One of the pipeline's streams (shards included), picked at random, and
/// the name suffix of the node leading it ("im-2" → "2").
async fn stream_leader(js: &jetstream::Context, pick: usize) -> Option<(String, String)> {
    let streams = im_runtime::topology::pipeline_streams(js).await.ok()?;
    let name = streams.get(pick % streams.len().max(1))?.clone();
    let mut stream = js.get_stream(&name).await.ok()?;
    let info = tokio::time::timeout(Duration::from_secs(2), stream.info())
        .await
        .ok()?
        .ok()?;
    let leader = info.cluster.as_ref()?.leader.clone()?;
    leader
        .rsplit('-')
        .next()
        .map(|suffix| (name, suffix.to_string()))
}

/// The partition lease keys (and revisions) `instance` holds.
async fn held_by(leases: &Option<jetstream::kv::Store>, instance: &str) -> Vec<(String, u64)> {
    let Some(bucket) = leases else { return vec![] };
    let mut held = Vec::new();
    if let Ok(mut keys) = bucket.keys().await {
        while let Some(Ok(key)) = keys.next().await {
            // Replicas' own entries (`members.…`) are not partitions.
            if key.starts_with("members.") {
                continue;
            }
            if let Ok(Some(entry)) = bucket.entry(&key).await {
                if entry.value.as_ref() == instance.as_bytes() {
                    held.push((key, entry.revision));
                }
            }
        }
    }
    held
}

/// How long until every one of `held` was claimed again (a new revision).
async fn wait_moved(
    leases: &Option<jetstream::kv::Store>,
    held: &[(String, u64)],
    timeout: Duration,
) -> Option<Duration> {
    let bucket = leases.as_ref()?;
    let started = Instant::now();
    let mut remaining: Vec<(String, u64)> = held.to_vec();
    while !remaining.is_empty() {
        if started.elapsed() > timeout {
            return None;
        }
        let mut still = Vec::new();
        for (key, revision) in remaining {
            match bucket.entry(&key).await {
                Ok(Some(entry))
                    if entry.revision > revision
                        && entry.operation == jetstream::kv::Operation::Put => {}
                _ => still.push((key, revision)),
            }
        }
        remaining = still;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(started.elapsed())
}

#[cfg(test)]
mod keep_tests {
    use super::*;

    #[test]
    fn a_run_whose_clients_saw_error_frames_keeps_its_logs() {
        assert!(keep_for_errors(
            &json!({"error_frames": {"unavailable": 28}})
        ));
        assert!(!keep_for_errors(&json!({"error_frames": {}})));
        assert!(!keep_for_errors(
            &json!({"error_frames": {"unavailable": 0}})
        ));
    }
}
