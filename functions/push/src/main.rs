use std::time::Duration;

use clap::Parser;
use im_runtime::{CommonArgs, Shutdown};

/// push: hands committed sync items to online devices through their gateway.
#[derive(Parser, Debug)]
#[command(name = "im-push", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Presence entries count as online this long after their last refresh (seconds).
    #[arg(long, env = "IM_PRESENCE_TTL_SECS", default_value_t = 30)]
    presence_ttl_secs: u64,
}

fn main() -> anyhow::Result<()> {
    im_runtime::process::block_on("im-push", run())?
}

async fn run() -> anyhow::Result<()> {
    im_runtime::config_file::load_from_args();
    let args = Args::parse();
    let stores = args.common.stores()?;
    let conversations = stores.conversations(None)?;
    let users = stores.users(None)?;
    let client = args.common.start("im-push").await?;
    tracing::info!("push running");
    im_push::run(
        client,
        conversations,
        users,
        Duration::from_secs(args.presence_ttl_secs.max(1)),
        args.common.instance_name("push"),
        args.common.lease_ttl(),
        Shutdown::on_signals(),
    )
    .await?;
    Ok(())
}
