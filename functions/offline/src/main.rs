use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use im_offline::providers::apns::{Apns, ApnsConfig};
use im_offline::providers::fcm::{Fcm, FcmConfig, ServiceAccount};
use im_offline::providers::hms::{Hms, HmsConfig};
use im_offline::providers::webhook::{Webhook, WebhookConfig};
use im_offline::providers::xiaomi::{Xiaomi, XiaomiConfig};
use im_offline::providers::Providers;
use im_offline::Settings;
use im_runtime::{CommonArgs, Shutdown};

/// offline: notifications for devices with no connection, through APNs, FCM,
/// Huawei Push Kit, Xiaomi Push or a signed webhook. A provider is enabled by
/// configuring it; a device registered with an unconfigured provider gets a
/// dead letter saying so.
#[derive(Parser, Debug)]
#[command(name = "im-offline", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// At most one notification per conversation per this many milliseconds.
    #[arg(long, env = "IM_NOTIFY_WINDOW_MS", default_value_t = 3000)]
    window_ms: i64,
    /// Messages older than this (seconds) when counted are not notified.
    #[arg(long, env = "IM_NOTIFY_STALE_SECS", default_value_t = 3600)]
    stale_secs: i64,
    /// Send attempts before a notification is dead-lettered.
    #[arg(long, env = "IM_NOTIFY_MAX_ATTEMPTS", default_value_t = 6)]
    max_attempts: u32,
    /// First retry delay (ms); doubles per attempt up to --retry-cap-ms.
    #[arg(long, env = "IM_NOTIFY_RETRY_BASE_MS", default_value_t = 1000)]
    retry_base_ms: i64,
    #[arg(long, env = "IM_NOTIFY_RETRY_CAP_MS", default_value_t = 300000)]
    retry_cap_ms: i64,
    /// Concurrent requests per provider.
    #[arg(long, env = "IM_NOTIFY_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Presence entries count as online this long after their last refresh (seconds).
    #[arg(long, env = "IM_PRESENCE_TTL_SECS", default_value_t = 30)]
    presence_ttl_secs: i64,

    /// APNs endpoint (https://api.sandbox.push.apple.com for development builds).
    #[arg(
        long,
        env = "IM_APNS_URL",
        default_value = "https://api.push.apple.com"
    )]
    apns_url: String,
    /// APNs signing key (.p8 file); enables APNs with the key id, team id and topic.
    #[arg(long, env = "IM_APNS_KEY_FILE")]
    apns_key_file: Option<PathBuf>,
    #[arg(long, env = "IM_APNS_KEY_ID", default_value = "")]
    apns_key_id: String,
    #[arg(long, env = "IM_APNS_TEAM_ID", default_value = "")]
    apns_team_id: String,
    /// The app's bundle id.
    #[arg(long, env = "IM_APNS_TOPIC", default_value = "")]
    apns_topic: String,

    /// FCM endpoint.
    #[arg(long, env = "IM_FCM_URL", default_value = "https://fcm.googleapis.com")]
    fcm_url: String,
    /// Google service-account key file (JSON); enables FCM.
    #[arg(long, env = "IM_FCM_CREDENTIALS")]
    fcm_credentials: Option<PathBuf>,
    /// Overrides the service account's token_uri.
    #[arg(long, env = "IM_FCM_TOKEN_URL")]
    fcm_token_url: Option<String>,

    /// Huawei Push Kit endpoint.
    #[arg(
        long,
        env = "IM_HMS_URL",
        default_value = "https://push-api.cloud.huawei.com"
    )]
    hms_url: String,
    #[arg(
        long,
        env = "IM_HMS_TOKEN_URL",
        default_value = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
    )]
    hms_token_url: String,
    /// Huawei app id (OAuth client id); enables HMS with --hms-client-secret.
    #[arg(long, env = "IM_HMS_APP_ID")]
    hms_app_id: Option<String>,
    #[arg(long, env = "IM_HMS_CLIENT_SECRET", default_value = "")]
    hms_client_secret: String,
    /// Launcher activity class, to set the badge on Huawei launchers.
    #[arg(long, env = "IM_HMS_BADGE_CLASS")]
    hms_badge_class: Option<String>,

    /// Xiaomi Push endpoint.
    #[arg(
        long,
        env = "IM_XIAOMI_URL",
        default_value = "https://api.xmpush.xiaomi.com"
    )]
    xiaomi_url: String,
    /// Xiaomi AppSecret; enables Xiaomi Push with --xiaomi-package.
    #[arg(long, env = "IM_XIAOMI_APP_SECRET")]
    xiaomi_app_secret: Option<String>,
    #[arg(long, env = "IM_XIAOMI_PACKAGE", default_value = "")]
    xiaomi_package: String,

    /// Webhook URL (HTTPS in production); enables the webhook provider.
    #[arg(long, env = "IM_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// HMAC-SHA256 key for the webhook signature.
    #[arg(long, env = "IM_WEBHOOK_SECRET", default_value = "")]
    webhook_secret: String,
}

fn require(value: &str, what: &str, provider: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !value.is_empty(),
        "{provider} is enabled but {what} is not set"
    );
    Ok(())
}

fn providers(args: &Args) -> anyhow::Result<Providers> {
    let mut builder = Providers::builder(args.concurrency);
    if let Some(path) = &args.apns_key_file {
        require(&args.apns_key_id, "--apns-key-id", "APNs")?;
        require(&args.apns_team_id, "--apns-team-id", "APNs")?;
        require(&args.apns_topic, "--apns-topic", "APNs")?;
        let key_pem = std::fs::read_to_string(path)
            .with_context(|| format!("read APNs key {}", path.display()))?;
        builder = builder.with(
            "apns",
            Arc::new(Apns::new(ApnsConfig {
                url: args.apns_url.clone(),
                key_pem,
                key_id: args.apns_key_id.clone(),
                team_id: args.apns_team_id.clone(),
                topic: args.apns_topic.clone(),
            })?),
        );
    }
    if let Some(path) = &args.fcm_credentials {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read FCM credentials {}", path.display()))?;
        let mut account: ServiceAccount = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a Google service-account key file",
                path.display()
            )
        })?;
        if let Some(url) = &args.fcm_token_url {
            account.token_uri = url.clone();
        }
        builder = builder.with(
            "fcm",
            Arc::new(Fcm::new(FcmConfig {
                url: args.fcm_url.clone(),
                account,
            })?),
        );
    }
    if let Some(app_id) = &args.hms_app_id {
        require(&args.hms_client_secret, "--hms-client-secret", "HMS")?;
        builder = builder.with(
            "hms",
            Arc::new(Hms::new(HmsConfig {
                url: args.hms_url.clone(),
                token_url: args.hms_token_url.clone(),
                app_id: app_id.clone(),
                client_secret: args.hms_client_secret.clone(),
                badge_class: args.hms_badge_class.clone(),
            })),
        );
    }
    if let Some(secret) = &args.xiaomi_app_secret {
        require(&args.xiaomi_package, "--xiaomi-package", "Xiaomi Push")?;
        builder = builder.with(
            "xiaomi",
            Arc::new(Xiaomi::new(XiaomiConfig {
                url: args.xiaomi_url.clone(),
                app_secret: secret.clone(),
                package: args.xiaomi_package.clone(),
            })),
        );
    }
    if let Some(url) = &args.webhook_url {
        require(&args.webhook_secret, "--webhook-secret", "the webhook")?;
        builder = builder.with(
            "webhook",
            Arc::new(Webhook::new(WebhookConfig {
                url: url.clone(),
                secret: args.webhook_secret.clone(),
            })),
        );
    }
    Ok(builder.build())
}

fn main() -> anyhow::Result<()> {
    im_runtime::process::block_on("im-offline", run())?
}

async fn run() -> anyhow::Result<()> {
    im_runtime::config_file::load_from_args();
    let args = Args::parse();
    let providers = providers(&args)?;
    let stores = args.common.stores()?;
    let store = stores.notifications(Some(args.common.durability()?))?;
    let users = stores.users(None)?;
    let conversations = stores.conversations(None)?;
    let client = args.common.start("im-offline").await?;
    let settings = Settings {
        window_ms: args.window_ms.max(0),
        stale_ms: args.stale_secs.max(1) * 1000,
        max_attempts: args.max_attempts.max(1),
        retry_base_ms: args.retry_base_ms.max(1),
        retry_cap_ms: args.retry_cap_ms.max(args.retry_base_ms.max(1)),
        presence_ttl_ms: args.presence_ttl_secs.max(1) * 1000,
    };
    tracing::info!(?settings, "offline running");
    im_offline::run(
        client,
        (store, users, conversations),
        providers,
        settings,
        args.common.instance_name("offline"),
        args.common.lease_ttl(),
        Shutdown::on_signals(),
    )
    .await?;
    Ok(())
}
