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

mod builder;
pub use builder::*;

/// The function binaries (`im-<name>`), in start order.
pub const FUNCTIONS: [&str; 6] = ["ingest", "dedupe", "fanout", "unread", "push", "offline"];

/// A gateway of the system: its process name and where it listens.
#[derive(Debug, Clone)]
pub struct GatewayProc {
    pub name: String,
    pub address: String,
    pub port: u16,
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
    ) -> crate::Result<()> {
        let kind = FUNCTIONS
            .iter()
            .find(|f| **f == function)
            .map(|f| Kind::Function(f))
            .ok_or_else(|| crate::setup_error!("no function {function}"))?;
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
    ) -> crate::Result<u16> {
        let port = free_port();
        let mut env = vec![("IM_HTTP".to_string(), format!("127.0.0.1:{port}"))];
        env.extend(extra.iter().cloned());
        self.spawn_gateway(instance, "127.0.0.1", port, &env)?;
        crate::ensure_setup!(
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
    ) -> crate::Result<()> {
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

    fn binary(&self, name: &str) -> crate::Result<PathBuf> {
        let path = self.bin_dir.join(name);
        crate::ensure_setup!(
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
    pub async fn client(&self, name: &str) -> crate::Result<async_nats::Client> {
        Ok(im_runtime::config::connect_as(&self.nats_url, name, &self.access()).await?)
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

    pub async fn js(&self) -> crate::Result<async_nats::jetstream::Context> {
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
    pub fn restart(&mut self, name: &str) -> crate::Result<()> {
        let proc = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| crate::setup_error!("no process named {name}"))?;
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
