use std::sync::Arc;

use clap::Parser;
use im_runtime::{CommonArgs, Shutdown};
use im_store::sqlite::SqliteConversationStore;

/// fanout: membership expansion into per-recipient deliveries.
#[derive(Parser, Debug)]
#[command(name = "im-fanout", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = args.common.data_dir.join("dedupe.db");
    let store = SqliteConversationStore::open_reader(&path)
        .map_err(|error| anyhow::anyhow!("open {}: {error}", path.display()))?;
    let client = args.common.start("im-fanout").await?;
    tracing::info!(store = %path.display(), "fanout running");
    im_fanout::run(
        client,
        Arc::new(store),
        args.common.instance_name("fanout"),
        args.common.lease_ttl(),
        Shutdown::on_signals(),
    )
    .await
}
