use std::time::Duration;

use clap::Parser;
use im_runtime::{CommonArgs, Shutdown};

/// im-gateway: WebSocket sessions and the HTTP API.
#[derive(Parser, Debug)]
#[command(name = "im-gateway", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on.
    #[arg(long, env = "IM_HTTP", default_value = "127.0.0.1:8080")]
    http: String,
    /// HS256 key of user tokens (optional with --jwks-url).
    #[arg(long, env = "IM_JWT_SECRET")]
    jwt_secret: Option<String>,
    /// HS256 key of service tokens, another than the users' (without it,
    /// no service token is accepted).
    #[arg(long, env = "IM_SERVICE_SECRET")]
    service_secret: Option<String>,
    /// An identity provider's key set (RS256/ES256 user tokens); needs
    /// --jwt-issuer and --jwt-audience.
    #[arg(long, env = "IM_JWKS_URL", requires_all = ["jwt_issuer", "jwt_audience"])]
    jwks_url: Option<String>,
    /// The `iss` the identity provider's tokens must carry.
    #[arg(long, env = "IM_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// The `aud` the identity provider's tokens must include.
    #[arg(long, env = "IM_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// How often the key set is fetched again (seconds); a key the provider
    /// removed stops working by then.
    #[arg(long, env = "IM_JWKS_REFRESH_SECS", default_value_t = 300)]
    jwks_refresh_secs: u64,
    /// Largest WebSocket frame or HTTP body, bytes.
    #[arg(long, env = "IM_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    max_frame_bytes: usize,
    /// Messages a user may send per second (token bucket rate).
    #[arg(long, env = "IM_RATE_PER_SECOND", default_value_t = 50.0)]
    rate_per_second: f64,
    /// Burst of the token bucket.
    #[arg(long, env = "IM_RATE_BURST", default_value_t = 100.0)]
    rate_burst: f64,
    /// Connections one user may hold on this gateway.
    #[arg(long, env = "IM_MAX_CONNECTIONS_PER_USER", default_value_t = 10)]
    max_connections_per_user: usize,
    /// Close connections silent for this long (seconds); clients ping.
    #[arg(long, env = "IM_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    idle_timeout_secs: u64,
    /// How long a send waits for the pipeline's verdict (seconds).
    #[arg(long, env = "IM_ACK_TIMEOUT_SECS", default_value_t = 30)]
    ack_timeout_secs: u64,
    /// Presence entries expire this long after the last refresh (seconds).
    #[arg(long, env = "IM_PRESENCE_TTL_SECS", default_value_t = 30)]
    presence_ttl_secs: u64,
    /// TCP_NODELAY on client connections: frames go out at once instead of
    /// waiting (Nagle) for the client to acknowledge the previous one.
    /// Leave it on; off only to measure what it costs.
    #[arg(long, env = "IM_TCP_NODELAY", default_value_t = true, action = clap::ArgAction::Set)]
    tcp_nodelay: bool,
    /// Read/write buffer per WebSocket connection (bytes): most of an idle
    /// connection's memory (tungstenite's default is 128 KiB each).
    #[arg(long, env = "IM_WS_BUFFER_BYTES", default_value_t = 4096)]
    ws_buffer_bytes: usize,
    /// Output one connection may have queued (bytes) before it is closed
    /// with `slow_consumer` and code 1008.
    #[arg(long, env = "IM_MAX_QUEUED_BYTES", default_value_t = 8 * 1024 * 1024)]
    max_queued_bytes: usize,
    /// A write to a socket that takes longer (seconds) closes it as slow.
    #[arg(long, env = "IM_WRITE_TIMEOUT_SECS", default_value_t = 10)]
    write_timeout_secs: u64,
    /// Largest history or sync reply (bytes); longer pages are cut and the
    /// client pages on.
    #[arg(long, env = "IM_MAX_REPLY_BYTES", default_value_t = 1024 * 1024)]
    max_reply_bytes: usize,
    /// Devices one user may register for push notifications.
    #[arg(long, env = "IM_MAX_PUSH_DEVICES", default_value_t = 20)]
    max_push_devices: usize,
    /// TLS certificate chain (PEM); with --tls-key the gateway speaks only
    /// HTTPS and WSS.
    #[arg(long, env = "IM_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "IM_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Where clients reach this gateway's WebSocket, as `GET /v1/connect`
    /// names it (default: ws:// or wss:// on --http, /v1/ws).
    #[arg(long, env = "IM_PUBLIC_URL")]
    public_url: Option<String>,
    /// How `GET /v1/connect` picks a gateway: least_connections,
    /// consistent_hash (by user), round_robin or weighted_random.
    #[arg(long, env = "IM_CONNECT_STRATEGY", default_value = "least_connections", value_parser = parse_strategy)]
    connect_strategy: im_gateway::access::Strategy,
    /// This gateway's weight for weighted_random.
    #[arg(long, env = "IM_GATEWAY_WEIGHT", default_value_t = 1)]
    weight: u32,
    /// On SIGTERM, close the sessions one after another over this long
    /// (seconds), each once its sends in flight are answered.
    #[arg(long, env = "IM_DRAIN_SECS", default_value_t = 10)]
    drain_secs: u64,
    /// The built web app (clients/js/dist, after `npm run build`), served
    /// at /app/.
    #[arg(long, env = "IM_APP_DIR")]
    app_dir: Option<std::path::PathBuf>,
    /// Development only: POST /v1/dev/token mints a token for any user name
    /// (imctl up turns it on). Never in production.
    #[arg(long, env = "IM_DEV_TOKENS", default_value_t = false)]
    dev_tokens: bool,
}

fn parse_strategy(text: &str) -> Result<im_gateway::access::Strategy, String> {
    im_gateway::access::Strategy::parse(text).ok_or_else(|| {
        format!("unknown strategy {text:?}; use least_connections, consistent_hash, round_robin or weighted_random")
    })
}

fn main() -> anyhow::Result<()> {
    im_runtime::process::block_on("im-gateway", run())?
}

async fn run() -> anyhow::Result<()> {
    im_runtime::config_file::load_from_args();
    let args = Args::parse();
    im_runtime::telemetry::init_tracing("im-gateway", args.common.log_json);
    for (secret, name) in [
        (&args.jwt_secret, "IM_JWT_SECRET / --jwt-secret"),
        (&args.service_secret, "IM_SERVICE_SECRET / --service-secret"),
    ] {
        if let Some(Err(reason)) = secret.as_deref().map(im_runtime::secrets::check) {
            anyhow::bail!("refusing to start: {reason} ({name})");
        }
    }
    if args.jwt_secret.is_some() && args.jwt_secret == args.service_secret {
        anyhow::bail!("refusing to start: the service key must differ from the user-token key (IM_SERVICE_SECRET)");
    }
    if args.jwt_secret.is_none() && args.jwks_url.is_none() {
        anyhow::bail!("refusing to start: no key for user tokens; give IM_JWT_SECRET (imctl up makes one) or IM_JWKS_URL");
    }
    let keys = im_gateway::auth::KeySettings {
        user_secret: args.jwt_secret.clone(),
        service_secret: args.service_secret.clone(),
        jwks: args
            .jwks_url
            .clone()
            .map(|url| im_gateway::auth::JwksSettings {
                url,
                issuer: args.jwt_issuer.clone().unwrap_or_default(),
                audience: args.jwt_audience.clone().unwrap_or_default(),
                refresh: Duration::from_secs(args.jwks_refresh_secs.max(10)),
                min_refetch: im_gateway::auth::MIN_REFETCH,
            }),
    };
    let recorder = im_runtime::telemetry::prometheus_recorder()?;
    let render: im_gateway::metrics_exporter::Handle = Box::new(move || recorder.render());
    let client = args.common.connect("im-gateway").await?;
    let data_dir = args.common.data_dir.clone();
    let stores = args.common.stores()?;
    let conversations = stores.conversations(None)?;
    let users = stores.users(None)?;
    let notifications = stores.notifications(None)?;
    let config = im_gateway::Config {
        keys,
        gateway_id: args.common.instance_name("gateway"),
        max_frame_bytes: args.max_frame_bytes,
        messages_per_second: args.rate_per_second,
        burst: args.rate_burst,
        max_connections_per_user: args.max_connections_per_user,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        ack_timeout: Duration::from_secs(args.ack_timeout_secs),
        presence_ttl: Duration::from_secs(args.presence_ttl_secs.max(1)),
        ws_buffer_bytes: args.ws_buffer_bytes.max(1024),
        max_queued_bytes: args.max_queued_bytes.max(64 * 1024),
        write_timeout: Duration::from_secs(args.write_timeout_secs.max(1)),
        max_reply_bytes: args.max_reply_bytes.max(16 * 1024),
        max_push_devices: args.max_push_devices.max(1),
        data_dir,
        public_url: args.public_url.clone().unwrap_or_else(|| {
            let scheme = if args.tls_cert.is_some() { "wss" } else { "ws" };
            format!("{scheme}://{}/v1/ws", args.http)
        }),
        connect_strategy: args.connect_strategy,
        weight: args.weight.max(1),
        drain_period: Duration::from_secs(args.drain_secs),
        app_dir: args.app_dir.clone(),
        dev_tokens: args.dev_tokens,
    };
    let gateway = im_gateway::Gateway::new(
        config,
        client,
        conversations,
        users,
        notifications,
        Some(render),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(&args.http)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "listen on {}: {e}; is the port taken? use --http",
                args.http
            )
        })?;
    let shutdown = Shutdown::on_signals();
    let app = im_gateway::http::app(gateway.clone());
    // On SIGTERM: drain the sessions first, then stop serving.
    let drained = {
        let (gateway, shutdown) = (gateway.clone(), shutdown.clone());
        async move {
            shutdown.wait().await;
            gateway.drain().await;
        }
    };
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let config = im_gateway::tls::server_config(cert, key)?;
            let listener = im_gateway::tls::TlsListener::new(listener, config, args.tcp_nodelay)?;
            tracing::info!(addr = %axum::serve::Listener::local_addr(&listener)?, tls = true, "gateway listening");
            axum::serve(listener, app)
                .with_graceful_shutdown(drained)
                .await?;
        }
        _ => {
            tracing::info!(addr = %listener.local_addr()?, tls = false, "gateway listening");
            // Frames are small and latency matters: no Nagle delay behind
            // the client's delayed ACKs (up to 40 ms a push otherwise).
            let nodelay = args.tcp_nodelay;
            let listener = axum::serve::ListenerExt::tap_io(
                listener,
                move |socket: &mut tokio::net::TcpStream| {
                    let _ = socket.set_nodelay(nodelay);
                },
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(drained)
                .await?;
        }
    }
    im_runtime::trace::flush();
    Ok(())
}
