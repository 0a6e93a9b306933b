//! The system as processes: nats-server (one node, or a 3-node cluster),
//! every function (`replicas` of each), gateways; streams created before
//! anything starts. Stopped in order when dropped: everything that uses
//! NATS drains first, then nats-server.

use std::path::PathBuf;
use std::time::Duration;

use im_runtime::config::Durability;

use crate::binaries::target_bin_dir;
use crate::nats::node_procs;
use crate::process::{free_base, free_port, wait_port, Kind, Proc};

/// The function binaries (`im-<name>`), in start order.
pub const FUNCTIONS: [&str; 6] = ["ingest", "dedupe", "fanout", "unread", "push", "offline"];

/// A gateway of the system: its process name and where it listens.
#[derive(Debug, Clone)]
pub struct GatewayProc {
    pub name: String,
    pub address: String,
    pub port: u16,
}

/// How to start a [`System`]; [`System::builder`] gives the defaults: one
/// NATS node, one replica of every function, one gateway, `strict`.
pub struct Builder {
    data_dir: Option<PathBuf>,
    nodes: usize,
    replicas: usize,
    gateways: usize,
    functions: Vec<&'static str>,
    durability: Durability,
    env: Vec<(String, String)>,
    nats_port: Option<u16>,
    monitor_port: Option<u16>,
    external_nats: Option<String>,
    http: Option<(String, u16)>,
    metrics_port: Option<u16>,
    jwt_secret: Option<String>,
    service_secret: Option<String>,
    auth: bool,
    tls: bool,
    log_filter: String,
    bin_dir: Option<PathBuf>,
    partitions: Option<u32>,
    shards: u32,
}

impl Builder {
    /// Split every partitioned stream into `shards` streams
    /// (`IM_STREAM_SHARDS`), so that their leaders can spread over the
    /// nodes; the nodes' configuration gets the account mapping keyed ingest
    /// subjects need then.
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Partitions of every partitioned stage (`IM_PARTITIONS`; default: the
    /// count in `schemas/streams.json`).
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// A cluster of `nodes` NATS nodes (3), R3 streams.
    pub fn cluster(mut self, nodes: usize) -> Self {
        self.nodes = nodes.max(1);
        self
    }

    /// Replicas of every function.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    pub fn gateways(mut self, gateways: usize) -> Self {
        self.gateways = gateways;
        self
    }

    /// Which functions to start (default: all of [`FUNCTIONS`]).
    pub fn functions(mut self, functions: &[&'static str]) -> Self {
        self.functions = functions.to_vec();
        self
    }

    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// An environment variable for every function and gateway.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Where stores, nats-server's store and logs go (default: a scratch
    /// directory removed when the system is dropped).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// nats-server's client port (cluster: the first node's; the others
    /// follow). Default: free ports.
    pub fn nats_port(mut self, port: u16) -> Self {
        self.nats_port = Some(port);
        self
    }

    pub fn monitor_port(mut self, port: u16) -> Self {
        self.monitor_port = Some(port);
        self
    }

    /// Use a running NATS instead of starting one.
    pub fn nats_url(mut self, url: impl Into<String>) -> Self {
        self.external_nats = Some(url.into());
        self
    }

    /// The first gateway's address; the others take the following ports.
    pub fn http(mut self, address: &str) -> anyhow::Result<Self> {
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--http {address:?} is not host:port"))?;
        self.http = Some((host, port));
        Ok(self)
    }

    /// Give every function a `/metrics` endpoint, on ports from `port` on.
    pub fn metrics_from(mut self, port: u16) -> Self {
        self.metrics_port = Some(port);
        self
    }

    /// Whether the nodes it starts authenticate every client, each process
    /// connecting as its role (default: yes). Ignored with an external NATS.
    pub fn nats_auth(mut self, on: bool) -> Self {
        self.auth = on;
        self
    }

    /// TLS everywhere it faces a client: nats-server (clients and routes)
    /// and the gateways, with a CA made for the data directory
    /// ([`crate::certs::TlsFiles`]) that every process trusts. Default: off.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// The key of service tokens (default: the data directory's
    /// `credentials/service-secret`, made on first start).
    pub fn service_secret(mut self, secret: impl Into<String>) -> Self {
        self.service_secret = Some(secret.into());
        self
    }

    /// `IM_LOG` of every process (default `info,async_nats=warn`).
    pub fn log(mut self, filter: impl Into<String>) -> Self {
        self.log_filter = filter.into();
        self
    }

    /// Where the function and gateway binaries are (default: beside the
    /// running executable, or the target directory for tests).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    pub async fn start(self) -> anyhow::Result<System> {
        let (data_dir, scratch) = match &self.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.canonicalize()?, None)
            }
            None => {
                let scratch = tempfile::Builder::new().prefix("im-system-").tempdir()?;
                (scratch.path().to_path_buf(), Some(scratch))
            }
        };
        let logs = data_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let bin_dir = self.bin_dir.clone().unwrap_or_else(target_bin_dir);
        let mut system = System {
            procs: Vec::new(),
            nats_url: String::new(),
            nats_ports: Vec::new(),
            gateways: Vec::new(),
            data_dir: data_dir.clone(),
            logs: logs.clone(),
            durability: self.durability,
            partitions: 0,
            metrics: Vec::new(),
            env: Vec::new(),
            jwt_secret: self
                .jwt_secret
                .clone()
                .unwrap_or_else(im_runtime::secrets::generate),
            service_secret: match &self.service_secret {
                Some(secret) => secret.clone(),
                None => im_runtime::secrets::load_or_create_service(&data_dir)?.0,
            },
            credentials: None,
            tls: None,
            bin_dir,
            scratch,
        };
        let stream_replicas = if self.nodes > 1 { 3 } else { 1 };
        match &self.external_nats {
            Some(url) => system.nats_url = url.clone(),
            None => {
                let base = match self.nats_port {
                    Some(port) => port,
                    None => free_base(),
                };
                let monitor = self.monitor_port.unwrap_or(base + 5000);
                if self.tls {
                    system.tls = Some(crate::certs::TlsFiles::ensure(&data_dir)?);
                }
                let authorization = if self.auth {
                    use im_runtime::nats_auth;
                    let all = nats_auth::ensure_credentials(&data_dir)?;
                    let admin = all
                        .iter()
                        .find(|c| c.user == "admin")
                        .cloned()
                        .expect("an admin role");
                    system.credentials = Some((nats_auth::credentials_dir(&data_dir), admin));
                    Some(nats_auth::server_config(&all))
                } else {
                    None
                };
                for (mut proc, port) in node_procs(
                    &data_dir,
                    &logs,
                    self.nodes,
                    base,
                    monitor,
                    self.durability,
                    &crate::nats::Security {
                        authorization,
                        tls: system.tls.clone(),
                        // Sharded, the mapping needs the partition count
                        // before any stream exists to tell it.
                        mappings: Some(im_runtime::topology::nats_mappings(
                            self.shards,
                            self.partitions.unwrap_or(default_partitions(self.nodes)),
                        )),
                    },
                )? {
                    proc.spawn()?;
                    system.procs.push(proc);
                    system.nats_ports.push(port);
                }
                for (index, port) in system.nats_ports.clone().into_iter().enumerate() {
                    if !wait_port(port, Duration::from_secs(20)).await {
                        let name = system.procs[index].name.clone();
                        anyhow::bail!(
                            "{name} did not listen on 127.0.0.1:{port} (see {}); is the port taken? try another --nats-port",
                            logs.join(format!("{name}.log")).display()
                        );
                    }
                }
                system.nats_url = system
                    .nats_ports
                    .iter()
                    .map(|port| format!("nats://127.0.0.1:{port}"))
                    .collect::<Vec<_>>()
                    .join(",");
            }
        }
        let access = system.access();
        let partitions = match self.partitions {
            Some(partitions) => partitions,
            None => chosen_partitions(&system.nats_url, &access, self.nodes).await,
        };
        anyhow::ensure!(
            self.shards == 1
                || self.external_nats.is_some()
                || partitions == self.partitions.unwrap_or(default_partitions(self.nodes)),
            "the streams here were made for {partitions} partitions: pass --partitions {partitions} with --shards {}",
            self.shards
        );
        system.partitions = partitions;
        // Stream bounds as every process will see them: the system's
        // environment, else this process's.
        let max_bytes = self
            .env
            .iter()
            .rev()
            .find(|(key, _)| key == "IM_STREAM_MAX_BYTES")
            .map(|(_, value)| value.clone())
            .or_else(|| std::env::var("IM_STREAM_MAX_BYTES").ok())
            .unwrap_or_default();
        let bounds =
            im_runtime::topology::MaxBytes::parse(&max_bytes).map_err(|e| anyhow::anyhow!(e))?;
        ensure_topology(
            &system.nats_url,
            &access,
            stream_replicas,
            partitions,
            self.shards,
            &bounds,
        )
        .await?;
        if self.shards > 1 && self.nodes > 1 && self.external_nats.is_none() {
            spread_leaders(&system.nats_url, &access, self.nodes).await;
        }
        system.env = vec![
            ("IM_NATS_URL".to_string(), system.nats_url.clone()),
            ("IM_DATA_DIR".to_string(), data_dir.display().to_string()),
            ("IM_LOG".to_string(), self.log_filter.clone()),
            ("IM_DURABILITY".to_string(), self.durability.to_string()),
            (
                "IM_STREAM_REPLICAS".to_string(),
                stream_replicas.to_string(),
            ),
            ("IM_PARTITIONS".to_string(), partitions.to_string()),
            ("IM_STREAM_SHARDS".to_string(), self.shards.to_string()),
            ("IM_STREAM_MAX_BYTES".to_string(), max_bytes),
        ];
        if let Some(tls) = &system.tls {
            system
                .env
                .push(("IM_NATS_CA".to_string(), tls.ca.display().to_string()));
        }
        system.env.extend(self.env.iter().cloned());
        let mut metrics_port = self.metrics_port;
        for function in &self.functions {
            for replica in 1..=self.replicas {
                let name = if self.replicas == 1 {
                    function.to_string()
                } else {
                    format!("{function}-{replica}")
                };
                let mut extra = Vec::new();
                if let Some(port) = metrics_port {
                    extra.push(("IM_METRICS_ADDR".to_string(), format!("127.0.0.1:{port}")));
                    system.metrics.push((name.clone(), port));
                    metrics_port = Some(port + 1);
                }
                system.add_function(function, &name, &extra)?;
            }
        }
        for n in 0..self.gateways {
            let name = if self.gateways == 1 {
                "gateway".to_string()
            } else {
                format!("gateway-{}", n + 1)
            };
            let (host, port) = match &self.http {
                Some((host, first)) => (host.clone(), first + n as u16),
                None => ("127.0.0.1".to_string(), free_port()),
            };
            let extra = vec![
                ("IM_HTTP".to_string(), format!("{host}:{port}")),
                ("IM_JWT_SECRET".to_string(), system.jwt_secret.clone()),
            ];
            system.spawn_gateway(&name, &host, port, &extra)?;
        }
        for gateway in system.gateways.clone() {
            if !wait_port(gateway.port, Duration::from_secs(30)).await {
                anyhow::bail!(
                    "{} did not listen on {}; see {}",
                    gateway.name,
                    gateway.address,
                    logs.join(format!("{}.log", gateway.name)).display()
                );
            }
        }
        for (name, port) in system.metrics.clone() {
            if !wait_port(port, Duration::from_secs(30)).await {
                anyhow::bail!(
                    "{name} did not come up; see {}",
                    logs.join(format!("{name}.log")).display()
                );
            }
        }
        Ok(system)
    }
}

/// Partitions when none are asked for: what the streams already on the
/// server were created with, else [`default_partitions`].
async fn chosen_partitions(
    nats_url: &str,
    access: &im_runtime::config::NatsAccess,
    nodes: usize,
) -> u32 {
    let Ok(client) = im_runtime::config::connect_as(nats_url, "im-harness", access).await else {
        return default_partitions(nodes);
    };
    let js = async_nats::jetstream::new(client);
    im_runtime::topology::existing_partitions(&js)
        .await
        .unwrap_or_else(|| default_partitions(nodes))
}

/// The partition count a new deployment gets: 4 on one machine (every
/// partition costs a consumer per stage, a lease and an outbox, and on two
/// cores fewer, fuller batches measure faster: docs/BENCHMARKS.md), 16 for
/// a cluster, whose replicas share them out.
pub fn default_partitions(nodes: usize) -> u32 {
    if nodes > 1 {
        16
    } else {
        4
    }
}

/// Shard `s` of every stage led by node `s` (`im-<s+1>`), waiting a little
/// for the elections: see [`im_runtime::topology::spread_leaders`].
async fn spread_leaders(nats_url: &str, access: &im_runtime::config::NatsAccess, nodes: usize) {
    let Ok(client) = im_runtime::config::connect_as(nats_url, "im-harness", access).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let names: Vec<String> = (1..=nodes).map(|n| format!("im-{n}")).collect();
    for _ in 0..10 {
        match im_runtime::topology::spread_leaders(&js, &names).await {
            Ok(0) => return,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Create the streams; a fresh cluster elects its meta leader first, so
/// retry for a while.
pub async fn ensure_topology(
    nats_url: &str,
    access: &im_runtime::config::NatsAccess,
    replicas: usize,
    partitions: u32,
    shards: u32,
    bounds: &im_runtime::topology::MaxBytes,
) -> anyhow::Result<()> {
    let client = im_runtime::config::connect_as(nats_url, "im-harness", access).await?;
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match im_runtime::topology::ensure_sharded_streams(
            &js, replicas, partitions, shards, bounds,
        )
        .await
        {
            Ok(()) => return Ok(()),
            // A refusal (another partition or shard count) will not change.
            Err(error)
                if error.to_string().contains("IM_PARTITIONS")
                    || error.to_string().contains("IM_STREAM_SHARDS") =>
            {
                return Err(error)
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

pub struct System {
    pub procs: Vec<Proc>,
    /// Every node's URL, comma-separated.
    pub nats_url: String,
    pub nats_ports: Vec<u16>,
    pub gateways: Vec<GatewayProc>,
    pub data_dir: PathBuf,
    pub logs: PathBuf,
    pub durability: Durability,
    /// Partitions of every partitioned stage.
    pub partitions: u32,
    /// Each function replica's `/metrics` port, if they have one.
    pub metrics: Vec<(String, u16)>,
    /// What every function and gateway gets.
    env: Vec<(String, String)>,
    /// The gateways' JWT secret: the one given, or a fresh random one.
    pub jwt_secret: String,
    /// The key of service tokens, another than the users'.
    pub service_secret: String,
    /// With an authenticated bus: where the roles' credentials are, and the
    /// `admin` ones in-process clients use.
    pub credentials: Option<(PathBuf, im_runtime::nats_auth::Credentials)>,
    /// With TLS: the CA every process trusts and the servers' certificate.
    pub tls: Option<crate::certs::TlsFiles>,
    bin_dir: PathBuf,
    scratch: Option<tempfile::TempDir>,
}

impl System {
    pub fn builder() -> Builder {
        Builder {
            data_dir: None,
            nodes: 1,
            replicas: 1,
            gateways: 1,
            functions: FUNCTIONS.to_vec(),
            durability: Durability::Strict,
            env: Vec::new(),
            nats_port: None,
            monitor_port: None,
            external_nats: None,
            http: None,
            metrics_port: None,
            jwt_secret: None,
            service_secret: None,
            auth: true,
            tls: false,
            log_filter: "info,async_nats=warn".to_string(),
            bin_dir: None,
            partitions: None,
            shards: 1,
        }
    }

    /// The environment a process named `instance` gets, with `extra` last
    /// (so it overrides).
    /// The environment of a process of `role`: what every process gets,
    /// its instance name and, on an authenticated bus, its credentials.
    pub fn env_for(
        &self,
        role: &str,
        instance: &str,
        extra: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("IM_INSTANCE".to_string(), instance.to_string()));
        if let Some((dir, _)) = &self.credentials {
            env.push((
                "IM_NATS_CREDS".to_string(),
                dir.join(role).display().to_string(),
            ));
        }
        env.extend(extra.iter().cloned());
        env
    }

    /// Start one more replica of `function`, named `instance`.
    pub fn add_function(
        &mut self,
        function: &str,
        instance: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<()> {
        let kind = FUNCTIONS
            .iter()
            .find(|f| **f == function)
            .map(|f| Kind::Function(f))
            .ok_or_else(|| anyhow::anyhow!("no function {function}"))?;
        let program = self.binary(&format!("im-{function}"))?;
        let mut proc = Proc::new(
            instance,
            kind,
            program,
            vec![],
            self.env_for(function, instance, extra),
            self.logs.join(format!("{instance}.log")),
        );
        proc.spawn()?;
        self.procs.push(proc);
        Ok(())
    }

    /// Start one more gateway named `instance` on a free port; returns the
    /// port once it listens.
    pub async fn add_gateway(
        &mut self,
        instance: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<u16> {
        let port = free_port();
        let mut env = vec![("IM_HTTP".to_string(), format!("127.0.0.1:{port}"))];
        env.extend(extra.iter().cloned());
        self.spawn_gateway(instance, "127.0.0.1", port, &env)?;
        anyhow::ensure!(
            wait_port(port, Duration::from_secs(30)).await,
            "gateway {instance} did not listen; see {}",
            self.logs.join(format!("{instance}.log")).display()
        );
        Ok(port)
    }

    fn spawn_gateway(
        &mut self,
        name: &str,
        host: &str,
        port: u16,
        extra: &[(String, String)],
    ) -> anyhow::Result<()> {
        let program = self.binary("im-gateway")?;
        let mut env = vec![("IM_SERVICE_SECRET".to_string(), self.service_secret.clone())];
        if let Some(tls) = &self.tls {
            env.push(("IM_TLS_CERT".to_string(), tls.cert.display().to_string()));
            env.push(("IM_TLS_KEY".to_string(), tls.key.display().to_string()));
        }
        env.extend(extra.iter().cloned());
        let mut proc = Proc::new(
            name,
            Kind::Gateway,
            program,
            vec![],
            self.env_for("gateway", name, &env),
            self.logs.join(format!("{name}.log")),
        );
        proc.spawn()?;
        self.procs.push(proc);
        self.gateways.retain(|g| g.name != name);
        self.gateways.push(GatewayProc {
            name: name.to_string(),
            address: format!("{host}:{port}"),
            port,
        });
        Ok(())
    }

    fn binary(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.bin_dir.join(name);
        anyhow::ensure!(
            path.exists(),
            "{} is missing: build every binary first (`cargo build --release --workspace --bins`)",
            path.display()
        );
        Ok(path)
    }

    pub fn proc(&mut self, name: &str) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.name == name)
    }

    /// The first gateway's port.
    pub fn gateway_port(&self) -> u16 {
        self.gateways.first().map(|g| g.port).unwrap_or(0)
    }

    /// A client of the `admin` role (or anonymous on an open bus).
    pub async fn client(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        im_runtime::config::connect_as(&self.nats_url, name, &self.access()).await
    }

    /// How in-process clients reach the bus: as `admin`, trusting the CA.
    pub fn access(&self) -> im_runtime::config::NatsAccess {
        self.access_as(self.admin())
    }

    /// The bus with these credentials (or none), trusting the system's CA.
    pub fn access_as(
        &self,
        credentials: Option<im_runtime::nats_auth::Credentials>,
    ) -> im_runtime::config::NatsAccess {
        im_runtime::config::NatsAccess {
            credentials,
            ca: self.tls.as_ref().map(|tls| tls.ca.clone()),
        }
    }

    /// The gateways' scheme for WebSocket URLs: `wss` with TLS.
    pub fn ws_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }

    /// The `admin` credentials, on an authenticated bus.
    pub fn admin(&self) -> Option<im_runtime::nats_auth::Credentials> {
        self.credentials.as_ref().map(|(_, admin)| admin.clone())
    }

    /// Credentials of `role`, on an authenticated bus.
    pub fn credentials_of(&self, role: &str) -> Option<im_runtime::nats_auth::Credentials> {
        let (dir, _) = self.credentials.as_ref()?;
        im_runtime::nats_auth::Credentials::read(&dir.join(role)).ok()
    }

    pub async fn js(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.client("im-harness").await?))
    }

    /// A process that exited on its own: its name and status.
    pub fn exited(&mut self) -> Option<(String, std::process::ExitStatus)> {
        self.procs
            .iter_mut()
            .find_map(|p| p.exited().map(|status| (p.name.clone(), status)))
    }

    /// Every process that exited on its own, and how.
    pub fn exited_all(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        self.procs
            .iter_mut()
            .filter_map(|p| p.exited().map(|status| (p.name.clone(), status)))
            .collect()
    }

    /// Start the process named `name` again (after it exited).
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let proc = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| anyhow::anyhow!("no process named {name}"))?;
        proc.kill9();
        proc.spawn()
    }

    /// Keep the data directory after the system stops (a scratch one is
    /// removed otherwise); returns it.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(scratch) = self.scratch.take() {
            let _ = scratch.keep();
        }
        self.data_dir.clone()
    }

    /// Stop in order: everything that uses NATS gets SIGTERM at once and
    /// drains (SIGKILL after 10 s), then nats-server. Draining against a
    /// dying broker would turn into timeouts.
    pub fn shutdown(&mut self) {
        for proc in self.procs.iter().filter(|p| p.kind != Kind::Nats) {
            proc.signal("TERM");
        }
        for proc in self.procs.iter_mut().filter(|p| p.kind != Kind::Nats) {
            if !proc.wait_exit(Duration::from_secs(10)) {
                eprintln!("{} did not stop in 10 s; killed it", proc.name);
            }
        }
        for proc in self.procs.iter().filter(|p| p.kind == Kind::Nats) {
            proc.signal("TERM");
        }
        for proc in self.procs.iter_mut().filter(|p| p.kind == Kind::Nats) {
            proc.wait_exit(Duration::from_secs(10));
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown();
    }
}
