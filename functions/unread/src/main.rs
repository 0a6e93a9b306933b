use clap::Parser;
use im_runtime::{CommonArgs, Shutdown};

/// unread: conversation lists, unread counts, per-user sync log.
#[derive(Parser, Debug)]
#[command(name = "im-unread", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Sync items each user's log keeps (0: all); a device whose cursor
    /// falls further behind is told to resync from history.
    #[arg(long, env = "IM_KEEP_SYNC_ITEMS", default_value_t = 10_000)]
    keep_sync_items: u64,
}

fn main() -> anyhow::Result<()> {
    im_runtime::process::block_on("im-unread", run())?
}

async fn run() -> anyhow::Result<()> {
    im_runtime::config_file::load_from_args();
    let args = Args::parse();
    let stores = args.common.stores()?;
    let store = stores.users(Some(args.common.durability()?))?;
    let conversations = stores.conversations(None)?;
    let client = args.common.start("im-unread").await?;
    tracing::info!(data_dir = %args.common.data_dir.display(), "unread running");
    im_unread::run(
        client,
        store,
        conversations,
        args.common.instance_name("unread"),
        args.common.lease_ttl(),
        (args.keep_sync_items > 0).then(|| im_unread::SyncRetention::keeping(args.keep_sync_items)),
        Shutdown::on_signals(),
    )
    .await?;
    Ok(())
}
