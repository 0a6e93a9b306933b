//! Logs and metrics. Metric names are fixed here; labels never carry user or
//! conversation ids.

pub const PROCESSED: &str = "im_processed_total";
pub const FAILED: &str = "im_failed_total";
pub const DEAD_LETTERED: &str = "im_dead_lettered_total";
pub const LAG: &str = "im_consumer_lag";
pub const BATCH_SECONDS: &str = "im_batch_seconds";
pub const OWNED_PARTITIONS: &str = "im_owned_partitions";

pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("IM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Serve `/metrics` on `addr` (empty: no endpoint). Returns the bound address.
pub fn init_metrics(addr: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let socket: std::net::SocketAddr = addr
        .parse()
        .map_err(|error| anyhow::anyhow!("--metrics-addr {addr:?} is not host:port: {error}"))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(socket)
        .install()
        .map_err(|error| anyhow::anyhow!("cannot serve metrics on {addr}: {error}"))?;
    Ok(Some(socket))
}
