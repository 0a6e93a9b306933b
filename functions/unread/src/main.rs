use std::sync::Arc;

use clap::Parser;
use im_runtime::{CommonArgs, Shutdown};
use im_store::sqlite::{conversations_in, users_in};

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
    let store = users_in(&args.common.data_dir, Some(args.common.durability()?))?;
    let conversations = conversations_in(&args.common.data_dir, None)?;
    let client = args.common.start("im-unread").await?;
    tracing::info!(data_dir = %args.common.data_dir.display(), "unread running");
    im_unread::run(
        client,
        Arc::new(store),
        Arc::new(conversations),
        args.common.instance_name("unread"),
        args.common.lease_ttl(),
        Shutdown::on_signals(),
    )
    .await
}
