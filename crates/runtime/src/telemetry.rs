//! Logs and metrics. Metric names are fixed here; labels never carry user or
//! conversation ids.

pub const PROCESSED: &str = "im_processed_total";
pub const FAILED: &str = "im_failed_total";
pub const DEAD_LETTERED: &str = "im_dead_lettered_total";
pub const LAG: &str = "im_consumer_lag";
pub const BATCH_SECONDS: &str = "im_batch_seconds";
pub const OWNED_PARTITIONS: &str = "im_owned_partitions";
pub const PARTITIONS: &str = "im_partitions";
/// Messages held back until an earlier one of their conversation arrives.
pub const HELD: &str = "im_held_total";
/// Bytes a stream holds on disk, and the most it may (`max_bytes`; full,
/// it refuses new messages): the NATS disk alerts compare the two.
pub const STREAM_BYTES: &str = "im_stream_bytes";
pub const STREAM_MAX_BYTES: &str = "im_stream_max_bytes";
/// Frames handed to gateways for devices, and how long after its send a
/// message's frame left: `path` "fast" (from dedupe's commit) or "log"
/// (push, from the sync log).
pub const PUSHED: &str = "im_pushed_total";
pub const PUSH_LATENCY_SECONDS: &str = "im_push_latency_seconds";

/// Count one pushed item; for a message, how long after it was sent.
pub fn record_pushed(item: &im_events::SyncItem, durable: bool, now_ms: i64) {
    metrics::counter!(PUSHED).increment(1);
    if let Some(message) = item.message() {
        if let Some(sent) = im_events::parse_rfc3339_ms(&message.sent_at) {
            let path = if durable { "log" } else { "fast" };
            metrics::histogram!(PUSH_LATENCY_SECONDS, "path" => path)
                .record((now_ms - sent).max(0) as f64 / 1000.0);
        }
    }
}

/// How often a function reports its streams' size.
pub const STREAM_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Report the size and bound of `streams` until `shutdown` (each function
/// reports the stream it reads and the dead letters).
pub async fn report_streams(
    js: async_nats::jetstream::Context,
    streams: Vec<String>,
    shutdown: crate::Shutdown,
) {
    loop {
        for name in &streams {
            let Ok(mut stream) = js.get_stream(name).await else {
                continue;
            };
            if let Ok(info) = stream.info().await {
                metrics::gauge!(STREAM_BYTES, "stream" => name.clone())
                    .set(info.state.bytes as f64);
                if info.config.max_bytes > 0 {
                    metrics::gauge!(STREAM_MAX_BYTES, "stream" => name.clone())
                        .set(info.config.max_bytes as f64);
                }
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(STREAM_REPORT_EVERY) => {}
        }
    }
}

/// Logs to stderr (filtered by `IM_LOG`), and stage spans over OTLP when
/// an endpoint is configured ([`crate::trace`]) under the name `service`.
pub fn init_tracing(service: &str, json: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    let filter = EnvFilter::try_from_env("IM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(crate::trace::layer(service))
        .try_init();
}

/// Set once the process has what it needs to work: its store open and its
/// partition manager running (owning partitions or standing by for them).
static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The process is up: `/readyz` answers 200 from now on while NATS is
/// connected.
pub fn mark_started() {
    STARTED.store(true, std::sync::atomic::Ordering::Release);
}

/// Buckets of every `*_seconds` histogram: 0.5 ms to 30 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0,
];

/// The Prometheus recorder every process installs: `*_seconds` metrics
/// are histograms with [`SECONDS_BUCKETS`].
pub fn prometheus_recorder() -> crate::Result<metrics_exporter_prometheus::PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &SECONDS_BUCKETS,
        )
        .map_err(|error| crate::config_error!("metrics buckets: {error}"))?
        .install_recorder()
        .map_err(|error| crate::config_error!("cannot install the metrics recorder: {error}"))
}

/// Serve `/metrics`, `/healthz` (the process runs) and `/readyz` (NATS
/// connected and [`mark_started`] called) on `addr`; empty: no endpoint.
/// Returns the bound address.
pub async fn serve_health(
    addr: &str,
    client: async_nats::Client,
) -> crate::Result<Option<std::net::SocketAddr>> {
    use axum::http::StatusCode;
    use axum::routing::get;
    if addr.is_empty() {
        return Ok(None);
    }
    let socket: std::net::SocketAddr = addr.parse().map_err(|error| {
        crate::config_error!("--metrics-addr {addr:?} is not host:port: {error}")
    })?;
    let handle = prometheus_recorder()?;
    let listener = tokio::net::TcpListener::bind(socket)
        .await
        .map_err(|error| {
            crate::config_error!("cannot serve metrics on {addr}: {error}; is the port taken?")
        })?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let connected =
                    client.connection_state() == async_nats::connection::State::Connected;
                let started = STARTED.load(std::sync::atomic::Ordering::Acquire);
                std::future::ready(match (connected, started) {
                    (true, true) => (StatusCode::OK, "ready".to_string()),
                    (false, _) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: NATS is not connected".to_string(),
                    ),
                    (true, false) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: still starting (store, partitions)".to_string(),
                    ),
                })
            }),
        );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the metrics endpoint stopped");
        }
    });
    Ok(Some(bound))
}
