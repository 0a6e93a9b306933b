//! `imctl up`: nats-server (unless --nats-url points at one) and every
//! function as its own process. Prints `ready` once all are up; on Ctrl-C or
//! SIGTERM stops them all; if any exits on its own, says so and stops the
//! rest rather than restarting it silently.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use tokio::process::{Child, Command};

/// The function binaries `up` starts, in start order.
pub const FUNCTIONS: [&str; 6] = ["ingest", "dedupe", "fanout", "unread", "push", "offline"];

const NATS_CONF: &str = include_str!("../../../nats.conf");
const CLUSTER_CONF: &str = include_str!("../../../infra/nats/cluster.conf");

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where the store files, nats-server's store and logs go.
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Port of the nats-server `up` starts.
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// nats-server's monitoring port (/varz, /jsz), loopback only.
    #[arg(long, default_value_t = 8222)]
    pub nats_monitor_port: u16,
    /// Use this running NATS server instead of starting one.
    #[arg(long, env = "IM_NATS_URL")]
    pub nats_url: Option<String>,
    /// Gateway address (WebSocket /v1/ws and the HTTP API).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Secret for the gateway's JWTs.
    #[arg(long, env = "IM_JWT_SECRET", default_value = "dev-secret-change-me")]
    pub jwt_secret: String,
    /// First port of the functions' /metrics endpoints (one each, in order).
    #[arg(long, default_value_t = 9190)]
    pub metrics_port: u16,
    /// Run a 3-node JetStream cluster (ports --nats-port .. +2, R3 streams),
    /// two replicas of every function and two gateways (--http and the next port).
    #[arg(long)]
    pub cluster: bool,
    /// SQLite durability for the stores: full or normal.
    #[arg(long, env = "IM_SQLITE_SYNC", default_value = "full")]
    pub sqlite_sync: String,
}

/// nats-server: $IM_NATS_SERVER, ./.tools (infra/install-nats.sh), PATH, or
/// install it with the script when it is at hand.
pub fn find_nats_server() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("IM_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let local = PathBuf::from(".tools/nats/bin/nats-server");
    if local.exists() {
        return Ok(local);
    }
    if let Ok(output) = std::process::Command::new("which")
        .arg("nats-server")
        .output()
    {
        if output.status.success() {
            return Ok(PathBuf::from(
                String::from_utf8_lossy(&output.stdout).trim(),
            ));
        }
    }
    let script = Path::new("infra/install-nats.sh");
    if script.exists() {
        let output = std::process::Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()?;
        if output.status.success() {
            return Ok(PathBuf::from(
                String::from_utf8_lossy(&output.stdout).trim(),
            ));
        }
    }
    anyhow::bail!("nats-server not found: run infra/install-nats.sh from the repository, set IM_NATS_SERVER, or pass --nats-url")
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|dir| dir.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    if path.exists() {
        Ok(path)
    } else {
        anyhow::bail!(
            "{} is missing: build every binary with `cargo build --release --bins`",
            path.display()
        )
    }
}

struct Supervised {
    name: String,
    child: Child,
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?)
}

async fn stop_all(children: &mut [Supervised]) {
    // The processes that use NATS drain first (in parallel), and only then
    // nats-server: draining against a dying broker turns into timeouts.
    let (broker, processes): (Vec<&mut Supervised>, Vec<&mut Supervised>) = children
        .iter_mut()
        .partition(|supervised| supervised.name.starts_with("nats-server"));
    stop_group(processes).await;
    stop_group(broker).await;
}

async fn stop_group(group: Vec<&mut Supervised>) {
    for supervised in &group {
        if let Some(pid) = supervised.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    for supervised in group {
        if tokio::time::timeout(Duration::from_secs(10), supervised.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "imctl: {} did not stop in 10 s, killing it",
                supervised.name
            );
            let _ = supervised.child.kill().await;
        }
    }
}

/// One nats-server node of what `up` (or chaos) starts.
pub struct NatsNode {
    pub name: String,
    pub port: u16,
    pub command: std::process::Command,
}

/// The nats-server nodes for a single node or a 3-node cluster: configs
/// written into `data_dir`, commands ready to spawn.
pub fn nats_nodes(
    binary: &Path,
    data_dir: &Path,
    port: u16,
    monitor_port: u16,
    cluster: bool,
) -> anyhow::Result<Vec<NatsNode>> {
    if !cluster {
        let conf = data_dir.join("nats.conf");
        std::fs::write(&conf, NATS_CONF)?;
        let mut command = std::process::Command::new(binary);
        command
            .arg("-c")
            .arg(&conf)
            .env("IM_NATS_PORT", port.to_string())
            .env("IM_NATS_MONITOR_PORT", monitor_port.to_string())
            .env("IM_NATS_STORE", data_dir.join("nats"));
        return Ok(vec![NatsNode {
            name: "nats-server".into(),
            port,
            command,
        }]);
    }
    let conf = data_dir.join("nats-cluster.conf");
    std::fs::write(&conf, CLUSTER_CONF)?;
    let cluster_port = |n: u16| port + 2000 + n;
    (0..3u16)
        .map(|n| {
            let mut command = std::process::Command::new(binary);
            command
                .arg("-c")
                .arg(&conf)
                .env("IM_NATS_NAME", format!("im-{}", n + 1))
                .env("IM_NATS_PORT", (port + n).to_string())
                .env("IM_NATS_MONITOR_PORT", (monitor_port + n).to_string())
                .env("IM_NATS_CLUSTER_PORT", cluster_port(n).to_string())
                .env("IM_NATS_STORE", data_dir.join(format!("nats-{}", n + 1)));
            for m in 0..3u16 {
                command.env(
                    format!("IM_NATS_ROUTE_{}", m + 1),
                    format!("nats://127.0.0.1:{}", cluster_port(m)),
                );
            }
            Ok(NatsNode {
                name: format!("nats-server-{}", n + 1),
                port: port + n,
                command,
            })
        })
        .collect()
}

/// The URL list of the nodes.
pub fn nats_url_of(nodes: &[NatsNode]) -> String {
    nodes
        .iter()
        .map(|node| format!("nats://127.0.0.1:{}", node.port))
        .collect::<Vec<_>>()
        .join(",")
}

/// Create the streams; a fresh cluster elects its meta leader first, so
/// retry for a while.
pub async fn ensure_topology(nats_url: &str) -> anyhow::Result<()> {
    let client = im_runtime::config::connect(nats_url, "imctl-up").await?;
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match im_runtime::topology::ensure_streams(&js).await {
            Ok(()) => return Ok(()),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, "streams not created yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut children: Vec<Supervised> = Vec::new();
    let replicas: usize = if args.cluster { 2 } else { 1 };
    if args.cluster {
        // Every stream and KV bucket R3, in this process and its children.
        std::env::set_var("IM_STREAM_REPLICAS", "3");
    }

    let nats_url = match &args.nats_url {
        Some(url) => url.clone(),
        None => {
            let binary = find_nats_server()?;
            let nodes = nats_nodes(
                &binary,
                &data_dir,
                args.nats_port,
                args.nats_monitor_port,
                args.cluster,
            )?;
            for node in &nodes {
                let mut command = Command::new(node.command.get_program());
                command.args(node.command.get_args());
                for (key, value) in node.command.get_envs() {
                    if let Some(value) = value {
                        command.env(key, value);
                    }
                }
                let child = command
                    .stdout(Stdio::null())
                    .stderr(log_file(&logs, &node.name)?)
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|error| anyhow::anyhow!("start {}: {error}", binary.display()))?;
                children.push(Supervised {
                    name: node.name.clone(),
                    child,
                });
            }
            for node in &nodes {
                if !crate::procs::wait_port(node.port, Duration::from_secs(20)).await {
                    stop_all(&mut children).await;
                    anyhow::bail!(
                        "{} did not listen on 127.0.0.1:{} (see {}); is the port taken? try --nats-port",
                        node.name,
                        node.port,
                        logs.join(format!("{}.log", node.name)).display()
                    );
                }
            }
            nats_url_of(&nodes)
        }
    };

    // Streams exist before `ready`, so a publish right after it is stored.
    if let Err(error) = ensure_topology(&nats_url).await {
        stop_all(&mut children).await;
        return Err(error);
    }

    let mut metrics_ports = Vec::new();
    for (index, function) in FUNCTIONS.iter().enumerate() {
        let binary = match sibling_binary(&format!("im-{function}")) {
            Ok(binary) => binary,
            Err(error) => {
                stop_all(&mut children).await;
                return Err(error);
            }
        };
        for replica in 1..=replicas {
            let name = if replicas == 1 {
                function.to_string()
            } else {
                format!("{function}-{replica}")
            };
            let metrics_port = args.metrics_port + (index * replicas + replica - 1) as u16;
            metrics_ports.push((name.clone(), metrics_port));
            let child = Command::new(&binary)
                .env("IM_NATS_URL", &nats_url)
                .env("IM_DATA_DIR", &data_dir)
                .env("IM_SQLITE_SYNC", &args.sqlite_sync)
                .env("IM_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
                .env("IM_INSTANCE", format!("{function}-{replica}"))
                .stdout(Stdio::null())
                .stderr(log_file(&logs, &name)?)
                .kill_on_drop(true)
                .spawn()
                .map_err(|error| anyhow::anyhow!("start {}: {error}", binary.display()))?;
            children.push(Supervised { name, child });
        }
    }
    let (host, first_port) = args
        .http
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--http {:?} is not host:port", args.http))?;
    let gateways: Vec<(String, String, u16)> = (0..replicas)
        .map(|n| {
            let name = if replicas == 1 {
                "gateway".to_string()
            } else {
                format!("gateway-{}", n + 1)
            };
            let port = first_port + n as u16;
            (name, format!("{host}:{port}"), port)
        })
        .collect();
    for (name, address, _) in &gateways {
        let gateway = match sibling_binary("im-gateway") {
            Ok(binary) => Command::new(&binary)
                .env("IM_NATS_URL", &nats_url)
                .env("IM_DATA_DIR", &data_dir)
                .env("IM_HTTP", address)
                .env("IM_JWT_SECRET", &args.jwt_secret)
                .env("IM_INSTANCE", name)
                .stdout(Stdio::null())
                .stderr(log_file(&logs, name)?)
                .kill_on_drop(true)
                .spawn()
                .map_err(|error| anyhow::anyhow!("start {}: {error}", binary.display())),
            Err(error) => Err(error),
        };
        match gateway {
            Ok(child) => children.push(Supervised {
                name: name.clone(),
                child,
            }),
            Err(error) => {
                stop_all(&mut children).await;
                return Err(error);
            }
        }
    }
    for (name, address, port) in &gateways {
        if !crate::procs::wait_port(*port, Duration::from_secs(30)).await {
            stop_all(&mut children).await;
            anyhow::bail!(
                "{name} did not listen on {address}; see {}",
                logs.join(format!("{name}.log")).display()
            );
        }
    }
    // Each function is up when its metrics endpoint answers.
    for (name, port) in &metrics_ports {
        if !crate::procs::wait_port(*port, Duration::from_secs(30)).await {
            stop_all(&mut children).await;
            anyhow::bail!(
                "{name} did not come up; see {}",
                logs.join(format!("{name}.log")).display()
            );
        }
    }
    println!(
        "ready: gateway {}, nats {nats_url}, functions {}{}, data {}, logs {}",
        gateways
            .iter()
            .map(|(_, address, _)| format!("ws://{address}/v1/ws"))
            .collect::<Vec<_>>()
            .join(" "),
        FUNCTIONS.join(" "),
        if replicas > 1 {
            format!(" (x{replicas})")
        } else {
            String::new()
        },
        data_dir.display(),
        logs.display()
    );

    let outcome = loop {
        let mut exited = None;
        for supervised in children.iter_mut() {
            if let Ok(Some(status)) = supervised.child.try_wait() {
                exited = Some(format!(
                    "{} exited ({status}); see {}",
                    supervised.name,
                    logs.join(format!("{}.log", supervised.name)).display()
                ));
                break;
            }
        }
        if let Some(message) = exited {
            break Err(anyhow::anyhow!(message));
        }
        tokio::select! {
            _ = im_runtime::shutdown::wait_for_signal() => break Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    };
    eprintln!("imctl: stopping");
    stop_all(&mut children).await;
    outcome
}
