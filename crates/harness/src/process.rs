//! A child process the harness controls: spawned with its environment and
//! a log file, killed (SIGKILL), signalled (TERM, STOP, CONT), restarted
//! with the same command, and killed when dropped. Free loopback ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

/// What a process is, for choosing faults and stop order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nats,
    /// A replica of one of [`crate::FUNCTIONS`].
    Function(&'static str),
    Gateway,
}

impl Kind {
    pub fn label(&self) -> &'static str {
        match self {
            Kind::Nats => "nats",
            Kind::Function(_) => "function",
            Kind::Gateway => "gateway",
        }
    }
}

pub struct Proc {
    pub name: String,
    pub kind: Kind,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Proc {
    pub fn new(
        name: impl Into<String>,
        kind: Kind,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Proc {
        Proc {
            name: name.into(),
            kind,
            program,
            args,
            env,
            log,
            child: None,
        }
    }

    pub fn spawn(&mut self) -> crate::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| crate::setup_error!("open {}: {e}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| crate::setup_error!("start {}: {e}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether it exited on its own, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
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

    /// Wait up to `grace` for an exit (after a SIGTERM sent elsewhere);
    /// SIGKILL if it does not come. Returns whether it exited by itself.
    pub fn wait_exit(&mut self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        if let Some(child) = self.child.as_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            return true;
        }
        self.kill9();
        false
    }

    /// SIGTERM and wait for a graceful exit (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        self.signal("TERM");
        self.wait_exit(grace);
    }

    /// SIGKILL, then start again with the same command.
    pub fn restart(&mut self) -> crate::Result<()> {
        self.kill9();
        self.spawn()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// The first of `count` consecutive free ports (the functions' metrics
/// endpoints, one each).
pub fn free_ports(count: u16) -> u16 {
    std::iter::repeat_with(free_port)
        .find(|port| {
            (1..count).all(|i| {
                port.checked_add(i)
                    .is_some_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
            })
        })
        .expect("free ports")
}

/// A base port with its neighbours free for a cluster of up to 3 nodes:
/// clients at base..+2, routes at +2000.., monitoring at +5000...
pub fn free_base() -> u16 {
    let mut rng = rand::rng();
    loop {
        let base: u16 = rng.random_range(20_000..38_000);
        let free = [0, 1, 2, 2000, 2001, 2002, 5000, 5001, 5002]
            .iter()
            .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if free {
            return base;
        }
    }
}

/// Block until something listens on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Wait until something listens on 127.0.0.1:`port`.
pub async fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}
