//! Processes that imctl starts and controls (chaos, bench): spawn, kill,
//! pause and resume, by pid; and free loopback ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use rand::Rng;

/// A process chaos controls.
pub struct Proc {
    pub name: String,
    pub kind: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Proc {
    /// A nats-server node as `up` describes it, logging into `logs`.
    pub fn nats(node: &crate::up::NatsNode, logs: &std::path::Path) -> Proc {
        Proc {
            name: node.name.clone(),
            kind: "nats",
            program: node.command.get_program().into(),
            args: node
                .command
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            env: node
                .command
                .get_envs()
                .filter_map(|(k, v)| {
                    Some((
                        k.to_string_lossy().into_owned(),
                        v?.to_string_lossy().into_owned(),
                    ))
                })
                .collect(),
            log: logs.join(format!("{}.log", node.name)),
            child: None,
        }
    }

    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("start {}: {e}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn free_base() -> u16 {
    let mut rng = rand::rng();
    loop {
        let base: u16 = rng.random_range(20_000..38_000);
        let ports = [
            base,
            base + 1,
            base + 2,
            base + 2000,
            base + 2001,
            base + 2002,
            base + 5000,
            base + 5001,
            base + 5002,
        ];
        if ports
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        {
            return base;
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub async fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Wait until no consumer has anything pending or unacknowledged.
pub async fn quiesce(js: &jetstream::Context, timeout: Duration) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut calm = 0;
    let mut busy = Vec::new();
    while Instant::now() < deadline {
        busy.clear();
        for stream in ["IM_INGEST", "IM_ACCEPTED", "IM_TIMELINE", "IM_DELIVERY"] {
            let Ok(stream) = js.get_stream(stream).await else {
                busy.push(format!("{stream}: no answer"));
                continue;
            };
            let mut consumers = stream.consumers();
            while let Some(info) = consumers.next().await {
                match info {
                    Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {}
                    Ok(info) => busy.push(format!(
                        "{} ({} pending, {} unacked)",
                        info.name, info.num_pending, info.num_ack_pending
                    )),
                    Err(error) => {
                        busy.push(format!("{}: {error}", stream.cached_info().config.name))
                    }
                }
            }
        }
        calm = if busy.is_empty() { calm + 1 } else { 0 };
        if calm >= 4 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(busy)
}
