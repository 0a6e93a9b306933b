//! Test harness: a real nats-server on its own port and store directory,
//! killed when dropped, and handles on the pipeline's function processes.
//!
//! The nats-server binary is found at `$IM_NATS_SERVER`, then at
//! `.tools/nats/bin/nats-server` in the workspace (where
//! `infra/install-nats.sh` puts it), then on `PATH`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("IM_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let local = workspace_root().join(".tools/nats/bin/nats-server");
    if local.exists() {
        return Ok(local);
    }
    if let Ok(output) = Command::new("which").arg("nats-server").output() {
        if output.status.success() {
            return Ok(PathBuf::from(
                String::from_utf8_lossy(&output.stdout).trim(),
            ));
        }
    }
    anyhow::bail!("nats-server not found: run infra/install-nats.sh (or set IM_NATS_SERVER)")
}

/// The directory cargo put this build's binaries in.
pub fn target_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("IM_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test executables live in <target>/<profile>/deps.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A binary of this workspace, built by `cargo build --workspace --bins`.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = target_bin_dir().join(name);
    if path.exists() {
        Ok(path)
    } else {
        anyhow::bail!("{} is missing: run `cargo build --workspace --bins` before the tests (infra/test.sh does)", path.display())
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A nats-server with JetStream on 127.0.0.1, a port and store of its own.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> anyhow::Result<Self> {
        let store = tempfile::Builder::new().prefix("im-nats-").tempdir()?;
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = nats_server_binary()?;
        let child = Command::new(&binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| anyhow::anyhow!("start {}: {error}", binary.display()))?;
        self.child = Some(child);
        if !wait_for_port(self.port, Duration::from_secs(20)) {
            anyhow::bail!(
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
    pub fn restart(&mut self) -> anyhow::Result<()> {
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

/// A child process that is killed on drop and can be killed and restarted.
pub struct Process {
    pub name: String,
    command: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    pub fn start(
        name: &str,
        command: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut process = Process {
            name: name.to_string(),
            command,
            args,
            env,
            log,
            child: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.command)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|error| anyhow::anyhow!("start {}: {error}", self.command.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// SIGTERM and wait for a graceful exit (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        self.signal("TERM");
        let deadline = Instant::now() + grace;
        if let Some(child) = self.child.as_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill9();
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
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
    pub fn start(size: usize) -> anyhow::Result<Self> {
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

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let binary = nats_server_binary()?;
        let node = &mut self.nodes[index];
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&node.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| anyhow::anyhow!("start {}: {error}", binary.display()))?;
        node.child = Some(child);
        if !wait_for_port(node.port, Duration::from_secs(20)) {
            anyhow::bail!(
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
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
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
