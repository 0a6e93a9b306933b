use clap::Parser;
use im_runtime::{CommonArgs, Shutdown};

/// unread: conversation lists, unread counts, per-user sync log.
#[derive(Parser, Debug)]
#[command(name = "im-unread", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
        Shutdown::on_signals(),
    )
    .await
}
