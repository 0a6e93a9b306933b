use clap::Parser;
use im_runtime::{CommonArgs, Shutdown};

/// fanout: membership expansion into per-recipient deliveries.
#[derive(Parser, Debug)]
#[command(name = "im-fanout", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    im_runtime::process::block_on("im-fanout", run())?
}

async fn run() -> anyhow::Result<()> {
    im_runtime::config_file::load_from_args();
    let args = Args::parse();
    let store = args.common.stores()?.conversations(None)?;
    let client = args.common.start("im-fanout").await?;
    tracing::info!(data_dir = %args.common.data_dir.display(), "fanout running");
    im_fanout::run(
        client,
        store,
        args.common.instance_name("fanout"),
        args.common.lease_ttl(),
        Shutdown::on_signals(),
    )
    .await?;
    Ok(())
}
