//! nats-server for tests of the runtime (a bare server, a cluster whose
//! nodes can be killed one at a time) and the node configurations the
//! system runs on, for a durability profile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::binaries::nats_server_binary;
use crate::process::{free_port, wait_for_port, Kind, Proc};
use im_runtime::config::Durability;

/// A nats-server with JetStream on 127.0.0.1, a port and store of its own.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> crate::Result<Self> {
        let store = tempfile::Builder::new().prefix("im-nats-").tempdir()?;
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> crate::Result<()> {
        let binary = nats_server_binary()?;
        // The store's limit as the system's nodes have it: left unset,
        // nats-server takes 75 % of the disk's free space, and the
        // streams' max_bytes (18.75 GiB together) are refused with
        // "insufficient storage resources" on a disk with less than 25 GiB
        // free.
        let conf = self.store.path().join("server.conf");
        std::fs::write(
            &conf,
            format!(
                "host: 127.0.0.1\nport: {}\njetstream {{\n  store_dir: {:?}\n  max_memory_store: 256MB\n  max_file_store: 20GB\n}}\n",
                self.port,
                self.store.path().join("js")
            ),
        )?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| crate::setup_error!("start {}: {error}", binary.display()))?;
        self.child = Some(child);
        if !wait_for_port(self.port, Duration::from_secs(20)) {
            crate::bail_setup!(
                "nats-server did not listen on port {} within 20 s",
                self.port
            );
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL, then start again on the same port and store.
    pub fn restart(&mut self) -> crate::Result<()> {
        self.kill();
        self.spawn()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The single-node configuration (`nats.conf`) and the cluster node's
/// (`infra/nats/cluster.conf`); the harness fills their variables.
const NATS_CONF: &str = include_str!("../../../nats.conf");
const CLUSTER_CONF: &str = include_str!("../../../infra/nats/cluster.conf");

/// What a system's nats-server nodes demand of who connects.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// An `authorization` block ([`im_runtime::nats_auth::server_config`]):
    /// the nodes refuse anonymous clients. In a cluster the routes between
    /// nodes then authenticate too, with a password of their own.
    pub authorization: Option<String>,
    /// TLS for client connections and, in a cluster, the routes.
    pub tls: Option<crate::certs::TlsFiles>,
    /// Account subject mappings (sharded streams:
    /// [`im_runtime::topology::nats_mappings`]).
    pub mappings: Option<String>,
}

/// The nats-server nodes of a system: one (`nats.conf`) or a cluster of
/// `nodes` (`cluster.conf`), their configs written into `data_dir`, ports
/// from `port` (clients), `port + 2000` (routes), `monitor_port`
/// (monitoring), as processes ready to spawn.
///
/// What [`Security`] asks for goes into files beside the config that it
/// includes, mode 0600: `nats-auth.conf` (who may do what), `nats-tls.conf`
/// (the server's certificate) and, in a cluster, `nats-routes.conf` (the
/// routes, their password and TLS).
pub fn node_procs(
    data_dir: &Path,
    logs: &Path,
    nodes: usize,
    port: u16,
    monitor_port: u16,
    durability: Durability,
    security: &Security,
) -> crate::Result<Vec<(Proc, u16)>> {
    let private = |name: &str, text: &str| -> crate::Result<()> {
        let path = data_dir.join(name);
        let _ = std::fs::remove_file(&path);
        im_runtime::secrets::create_private(&path, text.as_bytes())?;
        Ok(())
    };
    let tls_block = |verify: bool| {
        security.tls.as_ref().map(|tls| {
            format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {verify}\n  timeout: 5\n}}\n",
                tls.cert, tls.key, tls.ca
            )
        })
    };
    let with_security = |conf: &str| -> crate::Result<String> {
        let mut conf = conf.to_string();
        if let Some(block) = &security.authorization {
            private("nats-auth.conf", block)?;
            conf.push_str(
                "\n# Who may do what on the bus (made by imctl).\ninclude \"nats-auth.conf\"\n",
            );
        }
        if let Some(mappings) = security.mappings.as_deref().filter(|m| !m.is_empty()) {
            conf.push_str(
                "\n# Keyed ingest subjects to their partition (sharded streams; made by imctl).\n",
            );
            conf.push_str(mappings);
        }
        if let Some(block) = tls_block(false) {
            private("nats-tls.conf", &block)?;
            conf.push_str(
                "\n# Clients connect with TLS only (made by imctl).\ninclude \"nats-tls.conf\"\n",
            );
        }
        Ok(conf)
    };
    let binary = nats_server_binary()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let go_threads = nats_go_threads(
        std::env::var("GOMAXPROCS").ok().as_deref(),
        cores,
        durability,
    );
    let common = |extra: Vec<(String, String)>| {
        let mut env = vec![(
            "IM_NATS_SYNC".to_string(),
            durability.nats_sync_interval().to_string(),
        )];
        // One node only: three nodes of a cluster sharing a machine were not
        // measured this way (their Raft recovery after a node is killed
        // needs the threads most), so they keep Go's default.
        if nodes <= 1 {
            env.extend(go_threads.clone().map(|n| ("GOMAXPROCS".to_string(), n)));
        }
        env.extend(extra);
        env
    };
    if nodes <= 1 {
        let conf = data_dir.join("nats.conf");
        std::fs::write(&conf, with_security(NATS_CONF)?)?;
        let env = common(vec![
            ("IM_NATS_PORT".into(), port.to_string()),
            ("IM_NATS_MONITOR_PORT".into(), monitor_port.to_string()),
            (
                "IM_NATS_STORE".into(),
                data_dir.join("nats").display().to_string(),
            ),
        ]);
        let proc = Proc::new(
            "nats-server",
            Kind::Nats,
            binary,
            vec!["-c".into(), conf.display().to_string()],
            env,
            logs.join("nats-server.log"),
        );
        return Ok(vec![(proc, port)]);
    }
    crate::ensure_setup!(
        nodes == 3,
        "a local cluster has 3 nodes (infra/nats/cluster.conf routes to three), not {nodes}"
    );
    let conf = data_dir.join("nats-cluster.conf");
    std::fs::write(&conf, with_security(CLUSTER_CONF)?)?;
    let route_port = |n: usize| port + 2000 + n as u16;
    // The routes: authenticated whenever clients are (a stray process must
    // not join the cluster as a node and read every stream), over TLS when
    // clients are, each node verifying the others' certificates.
    let password = match &security.authorization {
        Some(_) => Some(route_password(data_dir)?),
        None => None,
    };
    let hosts: Vec<String> = (0..nodes)
        .map(|m| format!("127.0.0.1:{}", route_port(m)))
        .collect();
    let routes = routes_conf(&hosts, password.as_deref(), tls_block(true).as_deref());
    private("nats-routes.conf", &routes)?;

    (0..nodes)
        .map(|n| {
            let name = format!("nats-server-{}", n + 1);
            let env = common(vec![
                ("IM_NATS_NAME".into(), format!("im-{}", n + 1)),
                ("IM_NATS_PORT".into(), (port + n as u16).to_string()),
                (
                    "IM_NATS_MONITOR_PORT".into(),
                    (monitor_port + n as u16).to_string(),
                ),
                ("IM_NATS_CLUSTER_PORT".into(), route_port(n).to_string()),
                (
                    "IM_NATS_STORE".into(),
                    data_dir
                        .join(format!("nats-{}", n + 1))
                        .display()
                        .to_string(),
                ),
            ]);
            let proc = Proc::new(
                name.clone(),
                Kind::Nats,
                binary.clone(),
                vec!["-c".into(), conf.display().to_string()],
                env,
                logs.join(format!("{name}.log")),
            );
            Ok((proc, port + n as u16))
        })
        .collect()
}

/// The data directory's route password (made, mode 0600, if missing).
/// How many threads a nats-server node runs Go code on (`GOMAXPROCS`),
/// or `None` for Go's own choice (every core): what the caller's
/// environment says; else, under `relaxed`, half the machine's cores (at
/// least one). The broker shares the machine with the pipeline's
/// functions, and left to itself Go spreads its goroutines over every core,
/// where they wake one another across threads for every message: on two
/// cores one thread cut the broker's CPU per message by 11-28 % under
/// `relaxed`. Under `strict` every stored message is an fsync in the
/// storing goroutine, and with fewer threads the others wait for Go to
/// notice it is blocked: throughput fell (docs/BENCHMARKS.md), so `strict`
/// keeps Go's default.
pub fn nats_go_threads(
    configured: Option<&str>,
    cores: usize,
    durability: Durability,
) -> Option<String> {
    match configured.map(str::trim) {
        Some(value) if value.parse::<usize>().is_ok_and(|n| n > 0) => Some(value.to_string()),
        _ if durability == Durability::Strict => None,
        _ => Some((cores / 2).max(1).to_string()),
    }
}

pub fn route_password(data_dir: &Path) -> crate::Result<String> {
    let path = data_dir.join("credentials").join("nats-route");
    im_runtime::secrets::create_private(&path, im_runtime::secrets::generate().as_bytes())?;
    Ok(std::fs::read_to_string(&path)?.trim().to_string())
}

/// What goes inside a node's `cluster { }` block about its routes: the
/// routes to every node (`host:port`), the password they authenticate with
/// (when given) and their TLS block (when given).
pub fn routes_conf(hosts: &[String], password: Option<&str>, tls: Option<&str>) -> String {
    let mut routes = String::from("# The routes between the nodes (made by imctl).\n");
    let login = match password {
        Some(password) => {
            routes.push_str(&format!(
                "authorization {{ user: route, password: \"{password}\", timeout: 5 }}\n"
            ));
            format!("route:{password}@")
        }
        None => String::new(),
    };
    routes.push_str("routes: [\n");
    for host in hosts {
        routes.push_str(&format!("  nats://{login}{host}\n"));
    }
    routes.push_str("]\n");
    if let Some(block) = tls {
        routes.push_str(block);
    }
    routes
}

/// A JetStream cluster of nats-server processes on 127.0.0.1, each with its
/// own client port, route port and store, killed when dropped. Nodes can be
/// killed and restarted one at a time (same ports and store).
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
    _dir: tempfile::TempDir,
}

struct ClusterNode {
    name: String,
    port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl NatsCluster {
    pub fn start(size: usize) -> crate::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("im-nats-cluster-")
            .tempdir()?;
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("nats://127.0.0.1:{route}"))
            .collect();
        let mut nodes = Vec::new();
        for (index, (port, route_port)) in ports.iter().enumerate() {
            let name = format!("n{}", index + 1);
            let store = dir.path().join(&name);
            let conf = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nhost: 127.0.0.1\nport: {port}\n\
                     jetstream {{ store_dir: {store:?}, sync_interval: 1s }}\n\
                     cluster {{ name: im-test, host: 127.0.0.1, port: {route_port}, routes: [{}] }}\n",
                    routes.join(", ")
                ),
            )?;
            nodes.push(ClusterNode {
                name,
                port: *port,
                conf,
                child: None,
            });
        }
        let mut cluster = NatsCluster { nodes, _dir: dir };
        for index in 0..size {
            cluster.spawn(index)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize) -> crate::Result<()> {
        let binary = nats_server_binary()?;
        let node = &mut self.nodes[index];
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&node.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| crate::setup_error!("start {}: {error}", binary.display()))?;
        node.child = Some(child);
        if !wait_for_port(node.port, Duration::from_secs(20)) {
            crate::bail_setup!(
                "{} did not listen on port {} within 20 s",
                node.name,
                node.port
            );
        }
        Ok(())
    }

    /// Every node's client URL, comma-separated (what clients connect with).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One node's client URL.
    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[index].port)
    }

    /// The index of the node with this server name (`n1`, `n2`, …).
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == server_name)
    }

    /// SIGKILL one node.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start a killed node again, on its ports and store.
    pub fn restart(&mut self, index: usize) -> crate::Result<()> {
        self.kill(index);
        self.spawn(index)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_runs_go_on_half_the_cores_under_relaxed_unless_told_otherwise() {
        let relaxed = |configured, cores| nats_go_threads(configured, cores, Durability::Relaxed);
        assert_eq!(relaxed(None, 2).as_deref(), Some("1"));
        assert_eq!(relaxed(None, 1).as_deref(), Some("1"));
        assert_eq!(relaxed(None, 16).as_deref(), Some("8"));
        assert_eq!(relaxed(Some("3"), 2).as_deref(), Some("3"));
        assert_eq!(relaxed(Some(" 4 "), 2).as_deref(), Some("4"));
        // Nonsense is not passed on (Go would ignore it and take every core).
        assert_eq!(relaxed(Some("0"), 16).as_deref(), Some("8"));
        assert_eq!(relaxed(Some("many"), 2).as_deref(), Some("1"));
        assert_eq!(relaxed(Some(""), 4).as_deref(), Some("2"));
        // strict: Go's own choice, unless the caller set one.
        let strict = |configured, cores| nats_go_threads(configured, cores, Durability::Strict);
        assert_eq!(strict(None, 2), None);
        assert_eq!(strict(Some("many"), 2), None);
        assert_eq!(strict(Some("2"), 16).as_deref(), Some("2"));
    }

    #[test]
    fn a_single_node_is_started_with_its_go_threads_a_cluster_with_gos_default() {
        if nats_server_binary().is_err() {
            eprintln!("skipped: no nats-server (run infra/install-nats.sh)");
            return;
        }
        for (nodes, durability) in [
            (1, Durability::Relaxed),
            (3, Durability::Relaxed),
            (1, Durability::Strict),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let procs = node_procs(
                dir.path(),
                dir.path(),
                nodes,
                40_000,
                48_000,
                durability,
                &Security::default(),
            )
            .unwrap();
            assert_eq!(procs.len(), nodes);
            for (proc, _) in procs {
                let threads = proc
                    .env
                    .iter()
                    .find(|(name, _)| name == "GOMAXPROCS")
                    .map(|(_, value)| value.clone());
                let expected = if nodes > 1 {
                    None
                } else {
                    nats_go_threads(
                        std::env::var("GOMAXPROCS").ok().as_deref(),
                        std::thread::available_parallelism().map_or(1, usize::from),
                        durability,
                    )
                };
                assert_eq!(threads, expected, "{} ({durability:?})", proc.name);
            }
        }
    }
}
