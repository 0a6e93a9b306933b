use clap::Parser;
use im_runtime::{CommonArgs, Shutdown};

/// dedupe: idempotency, conversation seq, the message timeline.
#[derive(Parser, Debug)]
#[command(name = "im-dedupe", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Groups with more members than this switch to read diffusion.
    #[arg(long, env = "IM_LARGE_GROUP_THRESHOLD", default_value_t = 500)]
    large_group_threshold: u64,
    /// Largest message body in bytes (admission refuses larger ones).
    #[arg(long, env = "IM_MAX_BODY_BYTES", default_value_t = im_dedupe::decide::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// How long a sender may recall a message, in seconds.
    #[arg(long, env = "IM_RECALL_WINDOW_SECS", default_value_t = 120)]
    recall_window_secs: i64,
    #[command(flatten)]
    tiering: im_runtime::config::TieringArgs,
    /// How long a device counts as online after its gateway's last
    /// presence refresh (the fast path pushes to online devices only).
    #[arg(long, env = "IM_PRESENCE_TTL_SECS", default_value_t = 30)]
    presence_ttl_secs: u64,
    /// How often the archiver moves old messages to the cold tier (0 disables it).
    #[arg(long, env = "IM_ARCHIVE_EVERY", default_value = "10m")]
    archive_every: String,
}

fn main() -> anyhow::Result<()> {
    im_runtime::process::block_on("im-dedupe", run())?
}

async fn run() -> anyhow::Result<()> {
    im_runtime::config_file::load_from_args();
    let args = Args::parse();
    let policy = args.tiering.policy()?;
    let archive_every = im_runtime::config::parse_duration_secs(&args.archive_every)?;
    // Under `strict`, a commit is fsynced when the batch's verdicts and
    // acks are due, not in the commit: the fast path pushes to online
    // devices in between (see `Dedupe::handle`).
    let durability = match args.common.durability()? {
        im_store::sqlite::Durability::Full => im_store::sqlite::Durability::Deferred,
        other => other,
    };
    let store = args.common.stores()?.conversations(Some(durability))?;
    let client = args.common.start("im-dedupe").await?;
    let config = im_dedupe::decide::Config {
        large_group_threshold: args.large_group_threshold,
        recall_window_ms: args.recall_window_secs * 1000,
        admission: im_events::admission::Rules {
            max_body_bytes: args.max_body_bytes,
            conversation_partitions: im_runtime::topology::topology().partitions.conversation,
        },
    };
    tracing::info!(data_dir = %args.common.data_dir.display(), "dedupe running");
    let shutdown = Shutdown::on_signals();
    if archive_every > 0 {
        tokio::spawn(im_runtime::config::run_archiver(
            store.clone(),
            policy,
            std::time::Duration::from_secs(archive_every as u64),
            shutdown.clone(),
        ));
    }
    im_dedupe::run(
        client,
        store,
        config,
        args.common.instance_name("dedupe"),
        args.common.lease_ttl(),
        std::time::Duration::from_secs(args.presence_ttl_secs.max(1)),
        shutdown,
    )
    .await?;
    Ok(())
}
