//! `imctl`: run the pipeline locally, publish events, follow them, inspect
//! dead letters. `bench` and `chaos` are the lab's (crate `im-lab`).

mod archive;
mod chat;
mod credentials;
mod dlq;
mod notifications;
mod progress;
mod replay;
mod schema;
mod send;
mod status;
mod tail;
mod token;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "imctl", version, about = "Operate the IM pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// NATS role of this command: a `user:password` file (IM_NATS_CREDS;
    /// default for send, tail, dlq and replay: the data directory's admin).
    #[arg(long, global = true)]
    nats_creds: Option<std::path::PathBuf>,
    /// The CA that signed nats-server's certificate (IM_NATS_CA; default:
    /// the data directory's, when it runs with TLS).
    #[arg(long, global = true)]
    nats_ca: Option<std::path::PathBuf>,
    /// A TOML file of settings (keys: the variables' names, or them in
    /// lowercase without IM_: `http = "127.0.0.1:9000"`, `durability =
    /// "relaxed"`); the environment and flags override it; the processes
    /// `imctl up` starts read it too.
    #[arg(long, global = true, env = "IM_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// The effective settings (the file of --config, then the environment),
    /// secrets masked.
    Print,
}

/// Every `IM_*` setting in effect, masked where secret.
fn print_config() {
    let mut settings: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with("IM_") || name.starts_with("OTEL_"))
        .collect();
    settings.sort();
    if settings.is_empty() {
        println!("(no IM_* settings: every binary uses its defaults; see --help)");
    }
    for (name, value) in settings {
        println!("{name}={}", im_runtime::config_file::shown(&name, &value));
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Settings: `imctl config print` shows the effective ones.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run nats-server and every function locally; prints `ready`; Ctrl-C stops all.
    Up(up::UpArgs),
    /// Publish one CloudEvent to im.ingest.<type>.
    Send(send::SendArgs),
    /// Follow committed messages and rejections (or one user's deliveries).
    Tail(tail::TailArgs),
    /// Dead letters: list, show, redrive, purge.
    Dlq(dlq::DlqArgs),
    /// Measure: latency (send -> ack, send -> push on a running system) or tiers (bytes and read latency per history tier).
    Bench(im_lab::bench::BenchArgs),
    /// Chat in the terminal through the gateway.
    Chat(chat::ChatArgs),
    /// Mint a JWT the gateway accepts.
    Token(token::TokenArgs),
    /// What runs: functions' replicas and their partitions and lag, gateways, NATS nodes.
    Status(status::StatusArgs),
    /// Make every secret a deployment needs (NATS roles, token keys) and say where they are.
    Credentials(credentials::CredentialsArgs),
    /// Move messages past the hot window into the compressed cold tier; apply retention.
    Archive(archive::ArchiveArgs),
    /// A conversation's history, across the hot and cold tiers.
    History(archive::HistoryArgs),
    /// Faults under load on a 3-node cluster, then verify every acked message.
    Chaos(im_lab::chaos::ChaosArgs),
    /// Rebuild every store from JetStream into a fresh store (progress, resumable, --verify).
    Replay(replay::ReplayArgs),
    /// The ScyllaDB schema: apply (idempotent) or print.
    Schema(schema::SchemaArgs),
    /// The offline notification log: what was sent to which device, and the provider's answer.
    Notifications(notifications::NotificationsArgs),
}

#[tokio::main]
async fn main() {
    im_runtime::config_file::load_from_args();
    let cli = Cli::parse();
    im_runtime::config::install_crypto_provider();
    // Flags win over the variables every NATS connection reads.
    for (flag, variable) in [
        (&cli.nats_creds, "IM_NATS_CREDS"),
        (&cli.nats_ca, "IM_NATS_CA"),
    ] {
        if let Some(path) = flag {
            std::env::set_var(variable, path);
        }
    }
    im_runtime::telemetry::init_tracing("imctl", false);
    let operator = matches!(
        cli.command,
        Command::Send(_)
            | Command::Tail(_)
            | Command::Dlq(_)
            | Command::Replay(_)
            | Command::Status(_)
    );
    if operator {
        use_local_admin_credentials();
    }
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Send(args) => send::run(args).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::Token(args) => token::run(args),
        Command::Credentials(args) => credentials::run(args),
        Command::Status(args) => status::run(args).await,
        Command::Chat(args) => chat::run(args).await,
        Command::Bench(args) => im_lab::bench::run(args).await.map_err(Into::into),
        Command::Notifications(args) => notifications::run(args),
        Command::Archive(args) => archive::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Replay(args) => replay::run(args).await,
        Command::Chaos(args) => im_lab::chaos::run(args).await.map_err(Into::into),
        Command::History(args) => archive::history(args),
        Command::Config(ConfigCommand::Print) => {
            print_config();
            Ok(())
        }
    };
    if let Err(error) = result {
        eprintln!("imctl: {error:#}");
        std::process::exit(1);
    }
}

/// An operator's command on the machine `imctl up` runs on: with no NATS
/// credentials given, the data directory's `admin` ones (IM_DATA_DIR, or
/// ./data), so `imctl tail` works on an authenticated local bus.
fn use_local_admin_credentials() {
    let given = ["IM_NATS_CREDS", "IM_NATS_USER"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if given {
        return;
    }
    let data_dir = std::env::var_os("IM_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "./data".into());
    let admin = im_runtime::nats_auth::credentials_path(&data_dir, "admin");
    if admin.exists() {
        std::env::set_var("IM_NATS_CREDS", admin);
    }
    if let Some(ca) = im_harness::certs::ca_in_use(&data_dir) {
        if std::env::var_os("IM_NATS_CA").is_none() {
            std::env::set_var("IM_NATS_CA", ca);
        }
    }
}
