//! `imctl up`: nats-server (unless --nats-url points at one) and every
//! function as its own process. Prints `ready` once all are up; on Ctrl-C or
//! SIGTERM stops them all; if any exits on its own, says so and stops the
//! rest rather than restarting it silently.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use im_harness::{Durability, System};

pub use im_harness::FUNCTIONS;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where the store files, nats-server's store and logs go.
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Port of the nats-server `up` starts (a cluster: the first node's).
    #[arg(long, env = "IM_NATS_PORT", default_value_t = 4222)]
    pub nats_port: u16,
    /// nats-server's monitoring port (/varz, /jsz), loopback only.
    #[arg(long, default_value_t = 8222)]
    pub nats_monitor_port: u16,
    /// Use this running NATS server instead of starting one.
    #[arg(long, env = "IM_NATS_URL")]
    pub nats_url: Option<String>,
    /// Gateway address (WebSocket /v1/ws and the HTTP API).
    #[arg(long, env = "IM_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Secret for the gateway's JWTs (at least 32 bytes). Without one, the
    /// data directory's `credentials/jwt-secret` is used, made on first start.
    #[arg(long, env = "IM_JWT_SECRET")]
    pub jwt_secret: Option<String>,
    /// First port of the functions' /metrics endpoints (one each, in order).
    #[arg(long, env = "IM_METRICS_PORT", default_value_t = 9190)]
    pub metrics_port: u16,
    /// Run a 3-node JetStream cluster (ports --nats-port .. +2, R3 streams),
    /// replicas of every function (--replicas, default 2) and two gateways
    /// (--http and the next port).
    #[arg(long)]
    pub cluster: bool,
    /// Replicas of every function (default: 1, or 2 with --cluster).
    #[arg(long)]
    pub replicas: Option<usize>,
    /// Durability profile: strict (every ack fsynced; the single-node
    /// default) or relaxed (synced at most every 100 ms). See the README.
    #[arg(long, env = "IM_DURABILITY", default_value = "strict")]
    pub durability: Durability,
    /// Override the profile's SQLite sync: full, relaxed or normal.
    #[arg(long, env = "IM_SQLITE_SYNC")]
    pub sqlite_sync: Option<String>,
    /// Partitions of every partitioned stage (default: schemas/streams.json).
    /// Must match what the streams were created with (see the README).
    #[arg(long, env = "IM_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Split every partitioned stream into this many streams, so that
    /// their leaders spread over the NATS nodes (default: as many as nodes
    /// for a new data directory, else what it was started with; fixed per
    /// deployment).
    #[arg(long, env = "IM_STREAM_SHARDS")]
    pub shards: Option<u32>,
    /// TLS for NATS (clients and routes) and the gateways (wss://, https://),
    /// with a CA made for the data directory
    /// (`<data-dir>/credentials/tls/ca.pem`: clients trust it).
    #[arg(long)]
    pub tls: bool,
}

/// A process restarted this many times within [`CRASH_WINDOW`] is taken
/// for broken: `imctl up` stops.
const MAX_RESTARTS: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// What to do about a process that exited.
#[derive(Debug, PartialEq)]
enum Restart {
    /// Start it again after this long.
    After(Duration),
    /// Its restart is scheduled already.
    Pending,
    /// It died this many times within the window: stop everything.
    GiveUp(usize),
}

/// Where a data directory records the shard count it was started with.
const SHARDS_FILE: &str = "streams.shards";

/// The shard count to run with: what is asked for, else what the data
/// directory was started with, else as many as NATS nodes for a new one
/// (one leader per node) and 1 for one from before shards existed. Asking
/// for another count than the recorded one is refused: the streams would
/// not match.
pub fn shards_for(
    requested: Option<u32>,
    recorded: Option<u32>,
    fresh: bool,
    nodes: usize,
) -> anyhow::Result<u32> {
    let existing = recorded.or((!fresh).then_some(1));
    match (requested, existing) {
        (Some(asked), Some(had)) if asked != had => anyhow::bail!(
            "this data directory's streams are split into {had} shard(s), not {asked}: run with --shards {had} (the count is fixed per deployment; a new one needs a new --data-dir)"
        ),
        (Some(asked), _) => Ok(asked.clamp(1, im_runtime::topology::MAX_SHARDS)),
        (None, Some(had)) => Ok(had),
        (None, None) => Ok(nodes as u32),
    }
}

/// `imctl up`'s supervisor, pure: a process that dies is started again
/// after a second, doubling with each recent death (clients and partitions
/// move to the survivors first instead of racing back to a process that may
/// die again); one that keeps dying stops the system.
#[derive(Default)]
struct Supervisor {
    deaths: std::collections::HashMap<String, Vec<Instant>>,
    due: std::collections::HashMap<String, Instant>,
}

impl Supervisor {
    fn died(&mut self, name: &str, now: Instant) -> Restart {
        if self.due.contains_key(name) {
            return Restart::Pending;
        }
        let recent = self.deaths.entry(name.to_string()).or_default();
        recent.retain(|at| now.duration_since(*at) < CRASH_WINDOW);
        if recent.len() >= MAX_RESTARTS {
            return Restart::GiveUp(recent.len() + 1);
        }
        let wait = Duration::from_secs(1 << recent.len());
        recent.push(now);
        self.due.insert(name.to_string(), now + wait);
        Restart::After(wait)
    }

    /// The processes whose restart is due at `now`.
    fn due(&mut self, now: Instant) -> Vec<String> {
        let ready: Vec<String> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &ready {
            self.due.remove(name);
        }
        ready
    }
}

fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .unwrap_or_default()
}

/// Whether `imctl up` mints development tokens (anyone who reaches the
/// gateway can then sign in as anyone): only on a loopback address, unless
/// `IM_DEV_TOKENS` says otherwise.
fn dev_tokens_for(http: &str, setting: Option<&str>) -> bool {
    match setting.map(str::trim) {
        Some("true" | "1" | "yes") => true,
        Some("false" | "0" | "no") => false,
        _ => http
            .rsplit_once(':')
            .map(|(host, _)| host.trim_matches(['[', ']']))
            .is_some_and(|host| {
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }),
    }
}

/// The built browser chat: `clients/js/dist` of the checkout imctl runs
/// from (target/<profile>/imctl) or of the current directory.
fn web_app_dir() -> Option<PathBuf> {
    let candidates = [
        exe_dir().join("../../clients/js/dist"),
        PathBuf::from("clients/js/dist"),
    ];
    candidates
        .into_iter()
        .find(|dir| dir.join("app/index.html").exists())
        .and_then(|dir| dir.canonicalize().ok())
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let jwt_secret = match &args.jwt_secret {
        Some(secret) => secret.clone(),
        None => {
            let (secret, created) = im_runtime::secrets::load_or_create(&args.data_dir)?;
            let path = im_runtime::secrets::secret_path(&args.data_dir);
            if created {
                eprintln!(
                    "imctl: made a JWT secret in {} (mode 0600); `imctl token` reads it",
                    path.display()
                );
            }
            secret
        }
    };
    if let Err(reason) = im_runtime::secrets::check(&jwt_secret) {
        anyhow::bail!("{reason}");
    }
    let mut builder = System::builder()
        .data_dir(&args.data_dir)
        .durability(args.durability)
        .nats_port(args.nats_port)
        .monitor_port(args.nats_monitor_port)
        .http(&args.http)?
        .metrics_from(args.metrics_port)
        .jwt_secret(&jwt_secret)
        .bin_dir(exe_dir());
    if args.cluster {
        builder = builder.cluster(3).gateways(2).replicas(2);
    }
    if let Some(replicas) = args.replicas {
        builder = builder.replicas(replicas);
    }
    if let Some(url) = &args.nats_url {
        builder = builder.nats_url(url);
    }
    if let Some(sync) = &args.sqlite_sync {
        builder = builder.env("IM_SQLITE_SYNC", sync);
    }
    if let Some(partitions) = args.partitions {
        builder = builder.partitions(partitions);
    }
    let nodes = if args.cluster { 3 } else { 1 };
    let shards = if args.nats_url.is_some() {
        // Someone else's server: its account must map keyed subjects
        // itself when sharded (README), so only what is asked for.
        args.shards.unwrap_or(1)
    } else {
        let recorded = std::fs::read_to_string(args.data_dir.join(SHARDS_FILE))
            .ok()
            .and_then(|text| text.trim().parse().ok());
        let fresh = !std::fs::read_dir(&args.data_dir).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("nats")))
        });
        shards_for(args.shards, recorded, fresh, nodes)?
    };
    builder = builder.shards(shards);
    if args.nats_url.is_none() {
        std::fs::create_dir_all(&args.data_dir)?;
        std::fs::write(args.data_dir.join(SHARDS_FILE), format!("{shards}\n"))?;
    }
    builder = builder.tls(args.tls);
    // The browser chat, and development tokens for it (a name is enough to
    // sign in), but only where no one else can reach the gateway.
    let dev_tokens = dev_tokens_for(&args.http, std::env::var("IM_DEV_TOKENS").ok().as_deref());
    builder = builder.env("IM_DEV_TOKENS", if dev_tokens { "true" } else { "false" });
    let app = web_app_dir();
    if let Some(dir) = &app {
        builder = builder.env("IM_APP_DIR", dir.display().to_string());
    }
    let mut system = builder.start().await?;
    if let Some(tls) = &system.tls {
        eprintln!(
            "imctl: TLS on; clients trust the CA {} (IM_NATS_CA for NATS clients)",
            tls.ca.display()
        );
    }
    let replicas = args.replicas.unwrap_or(if args.cluster { 2 } else { 1 });
    println!(
        "ready: gateway {}, nats {}, functions {}{}, durability {}, partitions {}{}, data {}, logs {}",
        system
            .gateways
            .iter()
            .map(|g| format!("{}://{}/v1/ws", system.ws_scheme(), g.address))
            .collect::<Vec<_>>()
            .join(" "),
        system.nats_url,
        FUNCTIONS.join(" "),
        if replicas > 1 {
            format!(" (x{replicas})")
        } else {
            String::new()
        },
        args.durability,
        system.partitions,
        if shards > 1 {
            format!(" in {shards} stream shards")
        } else {
            String::new()
        },
        system.data_dir.display(),
        system.logs.display()
    );
    match (&app, system.gateways.first()) {
        (Some(_), Some(gateway)) => println!(
            "web chat: {}://{}/app/ ({})",
            if system.tls.is_some() {
                "https"
            } else {
                "http"
            },
            gateway.address,
            if dev_tokens {
                "sign in with any user name: development tokens are on"
            } else {
                "sign in with a token (imctl token): development tokens are off, the gateway is reachable from other machines"
            }
        ),
        _ => println!(
            "web chat: not built (cd clients/js && npm ci && npm run build, then restart imctl up)"
        ),
    }
    let mut supervisor = Supervisor::default();
    let outcome = 'supervise: loop {
        let now = Instant::now();
        for (name, status) in system.exited_all() {
            let log = system.logs.join(format!("{name}.log"));
            match supervisor.died(&name, now) {
                Restart::Pending => {}
                Restart::After(wait) => eprintln!(
                    "imctl: {name} exited ({status}); starting it again in {wait:?} (log: {})",
                    log.display()
                ),
                Restart::GiveUp(times) => {
                    break 'supervise Err(anyhow::anyhow!(
                        "{name} exited ({status}) {times} times within {CRASH_WINDOW:?}; see {}",
                        log.display()
                    ))
                }
            }
        }
        for name in supervisor.due(now) {
            if let Err(error) = system.restart(&name) {
                break 'supervise Err(error.into());
            }
        }
        tokio::select! {
            _ = im_runtime::shutdown::wait_for_signal() => break Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    };
    eprintln!("imctl: stopping");
    tokio::task::spawn_blocking(move || system.shutdown()).await?;
    outcome
}

#[cfg(test)]
mod tests;
