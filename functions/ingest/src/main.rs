use clap::Parser;
use im_runtime::{CommonArgs, Shutdown};

/// ingest: validates and normalizes inbound CloudEvents.
#[derive(Parser, Debug)]
#[command(name = "im-ingest", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Largest message body in bytes.
    #[arg(long, env = "IM_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    max_body_bytes: usize,
}

fn main() -> anyhow::Result<()> {
    im_runtime::process::block_on("im-ingest", run())?
}

async fn run() -> anyhow::Result<()> {
    im_runtime::config_file::load_from_args();
    let args = Args::parse();
    let client = args.common.start("im-ingest").await?;
    let config = im_ingest::Config {
        max_body_bytes: args.max_body_bytes,
        conversation_partitions: im_runtime::topology::topology().partitions.conversation,
    };
    tracing::info!("ingest running");
    im_ingest::run(
        client,
        config,
        args.common.instance_name("ingest"),
        args.common.lease_ttl(),
        Shutdown::on_signals(),
    )
    .await?;
    Ok(())
}
