//! How a system is described ([`Builder`]) and started: nats-server first,
//! streams and consumers, then the functions and gateways.

use super::*;

/// How to start a [`System`]; [`System::builder`] gives the defaults: one
/// NATS node, one replica of every function, one gateway, `strict`.
pub struct Builder {
    pub(super) data_dir: Option<PathBuf>,
    pub(super) nodes: usize,
    pub(super) replicas: usize,
    pub(super) gateways: usize,
    pub(super) functions: Vec<&'static str>,
    pub(super) durability: Durability,
    pub(super) env: Vec<(String, String)>,
    pub(super) nats_port: Option<u16>,
    pub(super) monitor_port: Option<u16>,
    pub(super) external_nats: Option<String>,
    pub(super) http: Option<(String, u16)>,
    pub(super) metrics_port: Option<u16>,
    pub(super) jwt_secret: Option<String>,
    pub(super) service_secret: Option<String>,
    pub(super) auth: bool,
    pub(super) tls: bool,
    pub(super) log_filter: String,
    pub(super) bin_dir: Option<PathBuf>,
    pub(super) partitions: Option<u32>,
    pub(super) shards: u32,
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
    pub fn http(mut self, address: &str) -> crate::Result<Self> {
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
            .ok_or_else(|| crate::setup_error!("--http {address:?} is not host:port"))?;
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

    pub async fn start(self) -> crate::Result<System> {
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
                            self.partitions
                                .unwrap_or(default_partitions(self.nodes, self.replicas)),
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
                        crate::bail_setup!(
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
            None => chosen_partitions(&system.nats_url, &access, self.nodes, self.replicas).await,
        };
        crate::ensure_setup!(
            self.shards == 1
                || self.external_nats.is_some()
                || partitions == self.partitions.unwrap_or(default_partitions(self.nodes, self.replicas)),
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
            im_runtime::topology::MaxBytes::parse(&max_bytes).map_err(crate::Error::Setup)?;
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
                crate::bail_setup!(
                    "{} did not listen on {}; see {}",
                    gateway.name,
                    gateway.address,
                    logs.join(format!("{}.log", gateway.name)).display()
                );
            }
        }
        for (name, port) in system.metrics.clone() {
            if !wait_port(port, Duration::from_secs(30)).await {
                crate::bail_setup!(
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
pub(super) async fn chosen_partitions(
    nats_url: &str,
    access: &im_runtime::config::NatsAccess,
    nodes: usize,
    replicas: usize,
) -> u32 {
    let Ok(client) = im_runtime::config::connect_as(nats_url, "im-harness", access).await else {
        return default_partitions(nodes, replicas);
    };
    let js = async_nats::jetstream::new(client);
    im_runtime::topology::existing_partitions(&js)
        .await
        .unwrap_or_else(|| default_partitions(nodes, replicas))
}

/// The partition count a new deployment gets. A cluster: 16, which its
/// replicas share out. One machine: half its cores (at least one, and at
/// least one per replica asked for). Every partition is a consumer per
/// stage, a lease and a batch cycle of its own; on one machine a stage's
/// batches of several partitions only split what one partition would
/// carry, each paying the same wake-ups, commit and publishes. On this
/// 2-core machine one partition beat four at every rate (acked/s +30 %,
/// CPU per message −25 % at saturation, −17 % at 1,000/s:
/// docs/BENCHMARKS.md); more cores run more partitions side by side.
pub fn default_partitions(nodes: usize, replicas: usize) -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    partitions_for(nodes, replicas, cores)
}

/// [`default_partitions`] on a machine of `cores` cores.
pub fn partitions_for(nodes: usize, replicas: usize, cores: usize) -> u32 {
    if nodes > 1 {
        return 16;
    }
    (cores / 2).max(1).max(replicas) as u32
}

/// Shard `s` of every stage led by node `s` (`im-<s+1>`), waiting a little
/// for the elections: see [`im_runtime::topology::spread_leaders`].
pub(super) async fn spread_leaders(
    nats_url: &str,
    access: &im_runtime::config::NatsAccess,
    nodes: usize,
) {
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
) -> crate::Result<()> {
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
            Err(error) if !error.is_transient() => return Err(error.into()),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests;
