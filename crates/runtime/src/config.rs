//! Flags every function binary shares.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// A TOML file of settings (keys: the variables' names, or them in
    /// lowercase without IM_); the environment and flags override it.
    #[arg(long, env = "IM_CONFIG")]
    pub config: Option<PathBuf>,
    /// NATS server URL.
    #[arg(long, env = "IM_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// This process's NATS role: a `user:password` file (`imctl up` and
    /// `imctl credentials` make them in <data-dir>/credentials/nats/).
    /// Without it, IM_NATS_USER / IM_NATS_PASSWORD, else anonymous.
    #[arg(long, env = "IM_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// The CA that signed nats-server's certificate: the connection must
    /// be TLS and the certificate must chain to it.
    #[arg(long, env = "IM_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Directory of the embedded store's files.
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Store backend: sqlite:///path (default: the data directory) or scylla://host1,host2/keyspace.
    #[arg(long, env = "IM_STORE")]
    pub store: Option<String>,
    /// Address of the Prometheus metrics endpoint (`/metrics`); empty disables it.
    #[arg(long, env = "IM_METRICS_ADDR", default_value = "")]
    pub metrics_addr: String,
    /// Name of this replica, unique among the function's replicas (default: host and pid).
    #[arg(long, env = "IM_INSTANCE")]
    pub instance: Option<String>,
    /// How long a partition lease lives without renewal; failover takes about this long.
    #[arg(long, env = "IM_LEASE_TTL_MS", default_value_t = 6000)]
    pub lease_ttl_ms: u64,
    /// Durability profile: `strict` (every acked message and every store
    /// commit it depends on fsynced first) or `relaxed` (synced at most every
    /// 100 ms). See the README.
    #[arg(long = "durability", env = "IM_DURABILITY", default_value = "strict")]
    pub profile: Durability,
    /// Override the profile's SQLite sync: `full` (fsync every commit),
    /// `relaxed` (fsync every 100 ms) or `normal` (checkpoints only).
    #[arg(long, env = "IM_SQLITE_SYNC")]
    pub sqlite_sync: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "IM_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl CommonArgs {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms.max(300))
    }

    pub fn instance_name(&self, function: &str) -> String {
        self.instance
            .clone()
            .unwrap_or_else(|| format!("{function}-{}", std::process::id()))
    }

    /// What every function binary does first: logs, NATS, and the
    /// metrics and health endpoint.
    pub async fn start(&self, process: &str) -> crate::Result<async_nats::Client> {
        crate::telemetry::init_tracing(process, self.log_json);
        let client = self.connect(process).await?;
        crate::telemetry::serve_health(&self.metrics_addr, client.clone()).await?;
        Ok(client)
    }

    /// Connect to NATS as the flags (or their variables) say.
    pub async fn connect(&self, process: &str) -> crate::Result<async_nats::Client> {
        connect_as(&self.nats_url, process, &self.nats_access()?).await
    }

    /// `--nats-creds` and `--nats-ca`, read.
    pub fn nats_access(&self) -> crate::Result<NatsAccess> {
        let mut access = NatsAccess::from_env()?;
        if let Some(path) = &self.nats_creds {
            access.credentials = Some(crate::nats_auth::Credentials::read(path)?);
        }
        if let Some(ca) = &self.nats_ca {
            crate::ensure_config!(
                ca.exists(),
                "--nats-ca {} does not exist; `imctl up --tls` makes one in <data-dir>/credentials/tls/ca.pem",
                ca.display()
            );
            access.ca = Some(ca.clone());
        }
        Ok(access)
    }

    /// The stores this process opens, as `--store` / `IM_STORE` selects.
    pub fn stores(&self) -> crate::Result<crate::stores::Stores> {
        Ok(crate::stores::Stores::new(crate::stores::StoreUri::parse(
            self.store.as_deref(),
            &self.data_dir,
        )?))
    }

    /// How this process's SQLite stores sync: as `--sqlite-sync` says, else
    /// as the profile says.
    pub fn durability(&self) -> crate::Result<im_store::sqlite::Durability> {
        match &self.sqlite_sync {
            None => Ok(self.profile.sqlite()),
            Some(text) => im_store::sqlite::Durability::parse(text).ok_or_else(|| {
                crate::config_error!("--sqlite-sync must be full, relaxed or normal, not {text:?}")
            }),
        }
    }
}

/// The durability profile of the whole system (the contract's §6): what an
/// ack means. `imctl up --durability` sets it for nats-server and every
/// function alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every acked message is fsynced before its ack, and so is every store
    /// commit it depends on: survives power loss. The single-node default.
    #[default]
    Strict,
    /// Disks sync at most every 100 ms: a process crash loses nothing; an OS
    /// crash or power loss may lose the last 100 ms of acks.
    Relaxed,
}

impl Durability {
    pub fn as_str(&self) -> &'static str {
        match self {
            Durability::Strict => "strict",
            Durability::Relaxed => "relaxed",
        }
    }

    /// nats-server's `jetstream.sync_interval`.
    pub fn nats_sync_interval(&self) -> &'static str {
        match self {
            Durability::Strict => "always",
            Durability::Relaxed => "100ms",
        }
    }

    /// How the SQLite stores sync.
    pub fn sqlite(&self) -> im_store::sqlite::Durability {
        match self {
            Durability::Strict => im_store::sqlite::Durability::Full,
            Durability::Relaxed => im_store::sqlite::Durability::Relaxed,
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "strict" => Ok(Durability::Strict),
            "relaxed" => Ok(Durability::Relaxed),
            _ => Err(format!(
                "durability must be strict or relaxed, not {text:?}"
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `nats://a:4222,nats://b:4222`: every server of a cluster.
pub fn server_addrs(url: &str) -> crate::Result<Vec<async_nats::ServerAddr>> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| crate::config_error!("NATS URL {u:?}: {e}"))
        })
        .collect::<crate::Result<Vec<_>>>()
        .and_then(|addrs| {
            crate::ensure_config!(!addrs.is_empty(), "no NATS URL given");
            Ok(addrs)
        })
}

/// How a process reaches NATS besides the URL: its role's credentials and
/// the CA it trusts for TLS (`IM_NATS_CA`; given one, the connection must
/// be TLS and the server's certificate must chain to it).
#[derive(Debug, Clone, Default)]
pub struct NatsAccess {
    pub credentials: Option<crate::nats_auth::Credentials>,
    pub ca: Option<PathBuf>,
}

impl NatsAccess {
    /// As the environment says: `IM_NATS_CREDS` (or `IM_NATS_USER` /
    /// `IM_NATS_PASSWORD`) and `IM_NATS_CA`.
    pub fn from_env() -> crate::Result<Self> {
        let ca = std::env::var_os("IM_NATS_CA")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        if let Some(ca) = &ca {
            crate::ensure_config!(
                ca.exists(),
                "IM_NATS_CA {} does not exist; `imctl up --tls` makes one in <data-dir>/credentials/tls/ca.pem",
                ca.display()
            );
        }
        Ok(NatsAccess {
            credentials: crate::nats_auth::Credentials::from_env()?,
            ca,
        })
    }

    pub fn with_credentials(credentials: Option<crate::nats_auth::Credentials>) -> Self {
        NatsAccess {
            credentials,
            ca: None,
        }
    }
}

/// Connect to NATS as the environment says ([`NatsAccess::from_env`]),
/// retrying while the server starts; says what to do if it never answers.
pub async fn connect(url: &str, name: &str) -> crate::Result<async_nats::Client> {
    connect_as(url, name, &NatsAccess::from_env()?).await
}

/// Connect to NATS with this access. A role reads its replies on its own
/// inbox prefix, which its permissions allow.
pub async fn connect_as(
    url: &str,
    name: &str,
    access: &NatsAccess,
) -> crate::Result<async_nats::Client> {
    install_crypto_provider();
    let credentials = access.credentials.as_ref();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            // Permission violations and refused credentials come back as
            // server errors: say them, with what to do.
            .event_callback(|event| async move {
                if let async_nats::Event::ServerError(error) = &event {
                    tracing::error!(%error, "nats refused an operation: check this process's role (IM_NATS_CREDS) and its permissions");
                }
            });
        if let Some(credentials) = credentials {
            options = options
                .user_and_password(credentials.user.clone(), credentials.password.clone())
                .custom_inbox_prefix(crate::nats_auth::inbox_prefix(&credentials.user));
        }
        if let Some(ca) = &access.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let attempt = options.connect(server_addrs(url)?);
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(error)) if error.to_string().to_ascii_lowercase().contains("authoriz") => {
                crate::bail_config!(
                    "NATS at {url} refused {}: {error}; give this process its role's credentials (IM_NATS_CREDS=<data-dir>/credentials/nats/<role>, made by imctl up)",
                    credentials.map(|c| format!("user {:?}", c.user)).unwrap_or_else(|| "an anonymous connection".into())
                )
            }
            Ok(Err(error)) if is_tls_refusal(&error.to_string()) => {
                crate::bail_config!(
                    "NATS at {url} refused the TLS connection: {error}; the server requires TLS: give the CA that signed its certificate with IM_NATS_CA (imctl up --tls: <data-dir>/credentials/tls/ca.pem)"
                )
            }
            Ok(Err(error)) if std::time::Instant::now() < deadline => {
                tracing::warn!(%error, url, "nats not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) if std::time::Instant::now() < deadline => {}
            Ok(Err(error)) => return Err(crate::nats_error!("cannot connect to NATS at {url}: {error}; is nats-server running (imctl up starts one)?")),
            Err(_) => return Err(crate::nats_error!("cannot connect to NATS at {url}: timed out; is nats-server running (imctl up starts one)?")),
        }
    }
}

/// Make ring the process's TLS provider. Two are linked (the ScyllaDB
/// driver's TLS brings aws-lc-rs), and a library that asks rustls for the
/// default (the NATS client does) panics when it cannot tell which. Every
/// configuration this workspace builds itself names ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn is_tls_refusal(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    ["certificate", "tls required", "unknownissuer", "handshake"]
        .iter()
        .any(|word| error.contains(word))
}

/// A duration as people write it: `90s`, `30m`, `1h`, `7d`, `1h30m`,
/// `2weeks` (humantime's units; bare numbers are seconds). Returns whole
/// seconds.
pub fn parse_duration_secs(text: &str) -> crate::Result<i64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        crate::ensure_config!(seconds >= 0, "{text:?}: a duration cannot be negative");
        return Ok(seconds);
    }
    let duration = humantime::parse_duration(text).map_err(|error| {
        crate::config_error!("{text:?} is not a duration ({error}): expected e.g. 90s, 30m, 1h, 7d")
    })?;
    crate::ensure_config!(
        duration.subsec_nanos() == 0,
        "{text:?}: give whole seconds (e.g. 1s, not 1500ms)"
    );
    i64::try_from(duration.as_secs()).map_err(|_| crate::config_error!("{text:?} is too long"))
}

/// Hot/cold tiering and retention of message history.
#[derive(Debug, Clone, Args)]
pub struct TieringArgs {
    /// Messages older than this move to the compressed cold tier.
    #[arg(long, env = "IM_HOT_WINDOW", default_value = "7d")]
    pub hot_window: String,
    /// Delete direct-conversation messages older than this (0: keep forever).
    #[arg(long, env = "IM_RETAIN_DIRECT", default_value = "0")]
    pub retain_direct: String,
    /// Delete group messages older than this (0: keep forever).
    #[arg(long, env = "IM_RETAIN_GROUP", default_value = "0")]
    pub retain_group: String,
    /// Most messages per cold segment.
    #[arg(long, env = "IM_SEGMENT_MESSAGES", default_value_t = 256)]
    pub segment_messages: usize,
    /// Forget idempotency keys older than this (at least 7d; 0 keeps them
    /// forever). A repeat of a forgotten (source, id) is applied as new.
    #[arg(long, env = "IM_KEEP_IDEMPOTENCY", default_value = "30d")]
    pub keep_idempotency: String,
}

impl TieringArgs {
    pub fn policy(&self) -> crate::Result<im_store::TieringPolicy> {
        let keep = |text: &str| -> crate::Result<Option<i64>> {
            let secs = parse_duration_secs(text)?;
            Ok((secs > 0).then_some(secs * 1000))
        };
        let policy = im_store::TieringPolicy {
            hot_window_ms: parse_duration_secs(&self.hot_window)? * 1000,
            retain_direct_ms: keep(&self.retain_direct)?,
            retain_group_ms: keep(&self.retain_group)?,
            segment_messages: self.segment_messages.max(1),
            keep_idempotency_ms: keep(&self.keep_idempotency)?,
        };
        if let Some(keep) = policy.keep_idempotency_ms {
            crate::ensure_config!(
                keep >= 7 * 86_400_000,
                "IM_KEEP_IDEMPOTENCY must be at least 7d (or 0 to keep keys forever): a publisher retrying within a week must still be answered as a repeat"
            );
        }
        for retain in [policy.retain_direct_ms, policy.retain_group_ms]
            .into_iter()
            .flatten()
        {
            crate::ensure_config!(
                retain >= policy.hot_window_ms,
                "retention must not be shorter than the hot window"
            );
        }
        Ok(policy)
    }
}

/// Run archiver passes every `every` until shutdown (the owner of the
/// conversation store does this).
pub async fn run_archiver(
    store: std::sync::Arc<dyn im_store::ConversationStore>,
    policy: im_store::TieringPolicy,
    every: Duration,
    shutdown: crate::Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return,
        }
        let (store, started) = (store.clone(), std::time::Instant::now());
        let pass = tokio::task::spawn_blocking(move || {
            store.archive(&policy, chrono::Utc::now().timestamp_millis(), &mut |_| {})
        })
        .await;
        match pass {
            Ok(Ok(report)) if report.moved + report.deleted > 0 => tracing::info!(
                moved = report.moved,
                segments = report.segments,
                deleted = report.deleted,
                seconds = started.elapsed().as_secs_f64(),
                "archived"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "archiver pass failed; the next pass goes on"),
            Err(error) => tracing::warn!(%error, "archiver pass panicked"),
        }
    }
}
