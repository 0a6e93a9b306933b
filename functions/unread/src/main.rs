use std::sync::Arc;

use clap::Parser;
use im_runtime::{CommonArgs, Shutdown};
use im_store::sqlite::{SqliteConversationStore, SqliteUserStore};

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
    let path = args.common.data_dir.join("unread.db");
    let store = SqliteUserStore::open_writer(&path, args.common.durability()?)
        .map_err(|error| anyhow::anyhow!("open {}: {error}", path.display()))?;
    let conversations_path = args.common.data_dir.join("dedupe.db");
    let conversations = SqliteConversationStore::open_reader(&conversations_path)
        .map_err(|error| anyhow::anyhow!("open {}: {error}", conversations_path.display()))?;
    let client = args.common.start("im-unread").await?;
    tracing::info!(store = %path.display(), "unread running");
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
