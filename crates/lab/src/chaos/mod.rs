//! `imctl chaos`: the system on a 3-node JetStream cluster with two replicas
//! of every function and two gateways, under steady 1:1 and group traffic
//! from real WebSocket clients, while random processes are SIGKILLed (a
//! function replica, a gateway, a NATS node) and restarted, or paused with
//! SIGSTOP and resumed. Then a verifier checks every acked message:
//! delivered to every member's device exactly once, in seq order, unread
//! counts exact, no seq gap or repeat. It prints a summary and exits
//! non-zero on any violation.

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

use im_harness::{Durability, Kind, System};

#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long to run load and faults, e.g. 90s or 15m.
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

/// Everything the clients saw, and when each send first went out (for
/// resends).
#[derive(Default)]
struct Book {
    ledger: verify::Ledger,
    first_sent: HashMap<String, Instant>,
}

/// The conversations of online user `c<user>`: the group, a direct one with
/// its partner, and one with `o<user>` if that offline user exists.
fn conversations_of(user: usize, users: usize, offline_users: usize) -> Vec<String> {
    let partner = if user.is_multiple_of(2) {
        user + 1
    } else {
        user - 1
    };
    let mut list = vec!["g:chaos".to_string()];
    if partner < users {
        list.push(im_events::ids::direct_conversation_id(
            &format!("c{user}"),
            &format!("c{partner}"),
        ));
    }
    if user < offline_users {
        list.push(offline_direct(user));
    }
    list
}

/// The direct conversation of offline user `o<n>` with `c<n>`.
fn offline_direct(n: usize) -> String {
    im_events::ids::direct_conversation_id(&format!("c{n}"), &format!("o{n}"))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(ports: &[u16], user: &str, device: &str, attempt: usize) -> Option<Socket> {
    let token =
        im_gateway::auth::mint_device(&SECRET, user, device, chrono::Utc::now().timestamp(), 7200);
    let port = ports[attempt % ports.len()];
    let url = format!("ws://127.0.0.1:{port}/v1/ws?token={token}");
    tokio::time::timeout(
        Duration::from_secs(3),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    .ok()?
    .ok()
    .map(|(socket, _)| socket)
}

/// One user's device: sends at its rate while `sending`, resends what is
/// not acked after a while (same client_msg_id: idempotent), reconnects to
/// the other gateway when its connection dies.
/// What every load device shares.
#[derive(Clone)]
struct Load {
    users: usize,
    offline_users: usize,
    per_second: f64,
    ports: Vec<u16>,
    book: Arc<Mutex<Book>>,
    sending: Arc<std::sync::atomic::AtomicBool>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

async fn device(index: usize, load: Load) {
    let Load {
        users,
        offline_users,
        per_second,
        ports,
        book,
        sending,
        done,
    } = load;
    let user = format!("c{index}");
    let conversations = conversations_of(index, users, offline_users);
    let mut counter = 0u64;
    let mut attempt = index;
    let interval = Duration::from_secs_f64(1.0 / per_second.max(0.01));
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(socket) = connect(&ports, &user, "d", attempt).await else {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (mut sink, mut stream) = socket.split();
        let reader_book = book.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let mut book = reader_book.lock().unwrap_or_else(|p| p.into_inner());
                let ledger = &mut book.ledger;
                match frame["op"].as_str() {
                    Some("ack") => {
                        let id = frame["client_msg_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        let message_id =
                            frame["message_id"].as_str().unwrap_or_default().to_string();
                        ledger
                            .acked
                            .insert(id, (message_id, frame["seq"].as_u64().unwrap_or(0)));
                    }
                    Some("error") => {
                        let code = frame["code"].as_str().unwrap_or("?").to_string();
                        *ledger.errors.entry(code.clone()).or_default() += 1;
                        let sample = format!(
                            "{} ({}; {})",
                            frame["message"].as_str().unwrap_or_default(),
                            frame["client_msg_id"]
                                .as_str()
                                .unwrap_or("no client_msg_id"),
                            chrono::Utc::now().format("%H:%M:%S%.3f")
                        );
                        let samples = ledger.error_samples.entry(code).or_default();
                        if samples.len() < 8 {
                            samples.push(sample);
                        }
                    }
                    _ => {}
                }
            }
        });
        let mut last_resend = Instant::now();
        let mut healthy = true;
        while healthy && !done.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(interval).await;
            if reader.is_finished() {
                break;
            }
            let mut frames = Vec::new();
            if sending.load(std::sync::atomic::Ordering::Relaxed) {
                counter += 1;
                let id = format!("{user}-{counter}");
                let conversation = conversations[(counter as usize) % conversations.len()].clone();
                let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
                book.ledger
                    .sent
                    .insert(id.clone(), (conversation.clone(), user.clone()));
                book.first_sent.insert(id.clone(), Instant::now());
                drop(book);
                frames.push(json!({"op": "send", "conversation_id": conversation, "client_msg_id": id, "kind": "text", "body": {"text": format!("chaos {counter}")}}));
            }
            if last_resend.elapsed() > Duration::from_secs(3) {
                last_resend = Instant::now();
                let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
                let overdue: Vec<(String, String)> = book
                    .ledger
                    .sent
                    .iter()
                    .filter(|(id, (_, sender))| {
                        *sender == user
                            && !book.ledger.acked.contains_key(*id)
                            && book
                                .first_sent
                                .get(*id)
                                .is_some_and(|at| at.elapsed() > Duration::from_secs(4))
                    })
                    .map(|(id, (conversation, _))| (id.clone(), conversation.clone()))
                    .take(20)
                    .collect();
                book.ledger.resends += overdue.len() as u64;
                for (id, conversation) in overdue {
                    frames.push(json!({"op": "send", "conversation_id": conversation, "client_msg_id": id, "kind": "text", "body": {"text": "chaos resend"}}));
                }
            }
            if frames.is_empty() {
                frames.push(json!({"op": "ping"}));
            }
            for frame in frames {
                if sink
                    .send(Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    healthy = false;
                    break;
                }
            }
        }
        reader.abort();
        attempt += 1;
    }
}

/// The one device of each offline user.
const OFFLINE_DEVICE: &str = "phone";

/// Register the offline user's device for webhook pushes (over the
/// WebSocket, as an app would), then disconnect for good.
async fn register_push(ports: &[u16], user: &str) -> anyhow::Result<()> {
    for attempt in 0..20 {
        let Some(mut socket) = connect(ports, user, OFFLINE_DEVICE, attempt).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let frame =
            json!({"op": "register_push", "provider": "webhook", "token": format!("hook-{user}")});
        socket.send(Message::Text(frame.to_string().into())).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Ok(Some(Ok(Message::Text(text)))) =
                tokio::time::timeout(Duration::from_secs(10), socket.next()).await
            else {
                break;
            };
            let value: Value = serde_json::from_str(&text)?;
            if value["op"] == "push_registered" {
                let _ = socket.close(None).await;
                return Ok(());
            }
            // Retryable (the token bucket may not exist yet while the
            // system starts): register again, as an app would.
            if value["op"] == "error" && value["code"] == "unavailable" {
                tokio::time::sleep(Duration::from_millis(300)).await;
                break;
            }
            if value["op"] == "error" {
                anyhow::bail!("registering {user}'s push token: {value}");
            }
        }
    }
    anyhow::bail!("could not register {user}'s push token")
}

/// A device's view for the verifier: its whole sync log and conversation list.
async fn read_user(ports: &[u16], user: &str) -> anyhow::Result<(Vec<Value>, Value)> {
    let mut socket = None;
    for attempt in 0..20 {
        socket = connect(ports, user, "d", attempt).await;
        if socket.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut socket = socket.ok_or_else(|| anyhow::anyhow!("no gateway accepts {user}"))?;
    async fn ask(socket: &mut Socket, frame: Value, op: &str) -> anyhow::Result<Value> {
        socket.send(Message::Text(frame.to_string().into())).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let next = tokio::time::timeout(Duration::from_secs(20), socket.next()).await?;
            let Some(Ok(Message::Text(text))) = next else {
                anyhow::bail!("connection ended");
            };
            let value: Value = serde_json::from_str(&text)?;
            if value["op"] == op {
                return Ok(value);
            }
        }
        anyhow::bail!("no {op}")
    }
    let mut items = Vec::new();
    let mut after = 0;
    loop {
        let page = ask(
            &mut socket,
            json!({"op": "sync", "after": after, "limit": 500}),
            "sync_result",
        )
        .await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        after = page["next"].as_u64().unwrap_or(after);
        if page["has_more"] != json!(true) {
            break;
        }
    }
    let conversations = ask(
        &mut socket,
        json!({"op": "conversations"}),
        "conversations_result",
    )
    .await?;
    Ok((items, conversations))
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
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
    let leases = js
        .get_key_value(im_events::subjects::LEASE_BUCKET)
        .await
        .ok();
    let started = Instant::now();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut max_failover = Duration::ZERO;
    let mut nats_down: Option<(usize, Instant)> = None;
    let mut rounds = 0u64;
    // The replica a scale fault added, until it leaves again.
    let mut extra: Option<String> = None;
    let mut joins = 0u32;
    while started.elapsed() < duration {
        let wait = fault_every.mul_f64(rng.random_range(0.5..1.5));
        tokio::time::sleep(wait.min(duration.saturating_sub(started.elapsed()))).await;
        if started.elapsed() >= duration {
            break;
        }
        // Bring back a NATS node that has been down a while.
        if let Some((index, since)) = nats_down {
            if since.elapsed() > Duration::from_secs(3) {
                system.procs[index].spawn()?;
                nats_down = None;
            }
        }
        // The first faults go through every kind once; then at random.
        // Until a NATS leader has been killed (the cluster may not have been
        // whole when its turn came), every free round tries again.
        let round = rounds;
        rounds += 1;
        let leader_due = !faults.contains_key("nats_leader") && nats_down.is_none();
        let roll: f64 = match round {
            0 => 0.1,
            1 if leader_due => 0.7,
            2 => 0.5,
            3 => 0.95,
            4 | 5 => 0.9,
            _ if leader_due => 0.7,
            _ => rng.random(),
        };
        // Scale: a replica joins (one more of a function), or the one that
        // joined leaves again, gracefully (SIGTERM: it hands its partitions
        // over after the batch in flight).
        if !args.no_scale && (0.85..0.95).contains(&roll) {
            let now = started.elapsed().as_secs_f64();
            match extra.take() {
                None => {
                    let function =
                        im_harness::FUNCTIONS[rng.random_range(0..im_harness::FUNCTIONS.len())];
                    joins += 1;
                    let instance = format!("{function}-x{joins}");
                    system.add_function(function, &instance, &[])?;
                    *faults.entry("join").or_default() += 1;
                    eprintln!("chaos {now:>5.0}s: {instance} joins");
                    extra = Some(instance);
                }
                Some(instance) => {
                    let held = held_by(&leases, &instance).await;
                    let left = Instant::now();
                    if let Some(index) = system.procs.iter().position(|p| p.name == instance) {
                        system.procs[index].signal("TERM");
                        let clean = system.procs[index].wait_exit(Duration::from_secs(20));
                        let moved = wait_moved(
                            &leases,
                            &held,
                            Duration::from_millis(args.lease_ttl_ms * 4),
                        )
                        .await;
                        system.procs.remove(index);
                        *faults.entry("leave").or_default() += 1;
                        eprintln!(
                            "chaos {now:>5.0}s: {instance} leaves{}, its {} partitions taken over in {:?} ({:?} after SIGTERM)",
                            if clean { "" } else { " (killed after 20 s)" },
                            held.len(),
                            moved,
                            left.elapsed()
                        );
                    }
                }
            }
            continue;
        }
        // A NATS node may go down only while the cluster is whole. Looked
        // at once per fault (a second look could disagree: under steady
        // writes a follower is a message behind at any instant), sampled
        // for a moment so such a flicker is not taken for a node catching
        // up; the NATS leader fault every run must have gives a cluster
        // still settling after start-up time to become whole.
        let whole = (0.65..0.85).contains(&roll)
            && nats_down.is_none()
            && cluster_whole_within(&js, Duration::from_secs(if leader_due { 30 } else { 1 }))
                .await;
        // Half of the NATS kills take the node leading one of the streams
        // (a shard, when they are sharded).
        let led = stream_leader(&js, rng.random_range(0..64)).await;
        let leader = led.as_ref().map(|(_, node)| node.clone());
        let candidates: Vec<usize> = if roll < 0.45 {
            system
                .procs
                .iter()
                .enumerate()
                .filter(|(_, p)| matches!(p.kind, Kind::Function(_)))
                .map(|(i, _)| i)
                .collect()
        } else if roll < 0.65 {
            system
                .procs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.kind == Kind::Gateway)
                .map(|(i, _)| i)
                .collect()
        } else if whole {
            let nodes: Vec<usize> = system
                .procs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.kind == Kind::Nats)
                .map(|(i, _)| i)
                .collect();
            match leader.as_deref().and_then(|name| {
                nodes
                    .iter()
                    .copied()
                    .find(|i| system.procs[*i].name.ends_with(name))
            }) {
                Some(leading) if leader_due || rng.random_bool(0.5) => vec![leading],
                _ => nodes,
            }
        } else {
            vec![]
        };
        if candidates.is_empty() {
            // Pause a function replica past its lease, then resume it: it
            // must notice it lost its partitions (the fence refuses it).
            let mut functions = Vec::new();
            for (i, p) in system
                .procs
                .iter()
                .enumerate()
                .filter(|(_, p)| matches!(p.kind, Kind::Function(_)))
            {
                if !held_by(&leases, &p.name).await.is_empty() {
                    functions.push(i);
                }
            }
            if functions.is_empty() {
                continue;
            }
            let victim = functions[rng.random_range(0..functions.len())];
            system.procs[victim].signal("STOP");
            let paused = Instant::now();
            let instance = system.procs[victim].name.clone();
            let held = held_by(&leases, &instance).await;
            let moved =
                wait_moved(&leases, &held, Duration::from_millis(args.lease_ttl_ms * 4)).await;
            max_failover = max_failover.max(moved.unwrap_or(paused.elapsed()));
            system.procs[victim].signal("CONT");
            *faults.entry("pause").or_default() += 1;
            eprintln!(
                "chaos {:>5.0}s: paused {instance}, {} partitions moved in {:?}",
                started.elapsed().as_secs_f64(),
                held.len(),
                moved
            );
            continue;
        }
        let victim = candidates[rng.random_range(0..candidates.len())];
        let name = system.procs[victim].name.clone();
        let kind = system.procs[victim].kind.label();
        let held = if kind == "function" {
            held_by(&leases, &name).await
        } else {
            vec![]
        };
        system.procs[victim].kill9();
        *faults.entry(kind).or_default() += 1;
        match kind {
            "nats" => {
                nats_down = Some((victim, Instant::now()));
                let leading = leader.as_deref().is_some_and(|l| name.ends_with(l));
                if leading {
                    *faults.entry("nats_leader").or_default() += 1;
                }
                eprintln!(
                    "chaos {:>5.0}s: SIGKILL {name}{}",
                    started.elapsed().as_secs_f64(),
                    match (&led, leading) {
                        (Some((stream, _)), true) => format!(" (leader of {stream})"),
                        _ => String::new(),
                    }
                );
            }
            "function" => {
                let moved =
                    wait_moved(&leases, &held, Duration::from_millis(args.lease_ttl_ms * 4)).await;
                if let Some(moved) = moved {
                    max_failover = max_failover.max(moved);
                }
                system.procs[victim].spawn()?;
                eprintln!(
                    "chaos {:>5.0}s: SIGKILL {name}, {} partitions moved in {:?}, restarted",
                    started.elapsed().as_secs_f64(),
                    held.len(),
                    moved
                );
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                system.procs[victim].spawn()?;
                eprintln!(
                    "chaos {:>5.0}s: SIGKILL {name}, restarted",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    if let Some((index, _)) = nats_down {
        system.procs[index].spawn()?;
    }
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
        "faults": faults,
        "max_failover_ms": max_failover.as_millis() as u64,
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
    anyhow::ensure!(
        violations.is_empty(),
        "{} violations; logs in {}",
        violations.len(),
        logs.display()
    );
    if args.data_dir.is_none() {
        // A clean run's scratch data is not worth keeping.
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
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
