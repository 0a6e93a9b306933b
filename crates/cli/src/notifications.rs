//! `imctl notifications`: the offline function's notification log, read
//! from its store file (the same entries as the gateway's
//! `GET /v1/notifications`).

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct NotificationsArgs {
    /// The data directory of the running system.
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Store backend: sqlite:///path or scylla://host1,host2/keyspace (default: the data directory).
    #[arg(long, env = "IM_STORE")]
    pub store: Option<String>,
    /// Only this user's notifications.
    #[arg(long)]
    pub user: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: NotificationsArgs) -> anyhow::Result<()> {
    let uri = im_runtime::stores::StoreUri::parse(args.store.as_deref(), &args.data_dir)?;
    if let im_runtime::stores::StoreUri::Sqlite(dir) = &uri {
        let path = dir.join(im_store::sqlite::NOTIFICATIONS_FILE);
        anyhow::ensure!(
            path.exists(),
            "{} does not exist: is the offline function running with --data-dir {}?",
            path.display(),
            dir.display()
        );
    }
    let store = im_runtime::stores::Stores::new(uri).notifications(None)?;
    let records = store.notification_log(args.user.as_deref(), args.limit.clamp(1, 100_000))?;
    for record in &records {
        let item = im_gateway::http::log_item(record);
        if args.json {
            println!("{item}");
        } else {
            println!(
                "{}  {:<8} {:<10} {}/{} {} {} x{}  {}",
                item["created_at"].as_str().unwrap_or_default(),
                record.status.as_str(),
                if record.provider.is_empty() {
                    "-"
                } else {
                    &record.provider
                },
                record.user_id,
                if record.device_id.is_empty() {
                    "-"
                } else {
                    &record.device_id
                },
                record.conversation_id,
                record.payload["body"]
                    .as_str()
                    .map(|b| format!("{b:?}"))
                    .unwrap_or_default(),
                record.attempts,
                record.answer.as_deref().unwrap_or(""),
            );
        }
    }
    if records.is_empty() && !args.json {
        eprintln!("no notifications yet");
    }
    Ok(())
}
