//! `imctl archive`: move messages older than the hot window into the
//! compressed cold tier (and apply retention), with progress; `imctl
//! history`: read a conversation's history across both tiers.

use std::path::PathBuf;

use clap::Args;
use im_runtime::config::TieringArgs;
use im_runtime::stores::{StoreUri, Stores};
use im_store::TierStats;

#[derive(Args, Debug)]
pub struct ArchiveArgs {
    /// The data directory of the system.
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Store backend: sqlite:///path or scylla://host1,host2/keyspace (default: the data directory).
    #[arg(long, env = "IM_STORE")]
    pub store: Option<String>,
    #[command(flatten)]
    pub tiering: TieringArgs,
    /// Keep running a pass this often (e.g. 10m) instead of once.
    #[arg(long)]
    pub watch: Option<String>,
    /// SQLite durability: full or normal.
    #[arg(long, env = "IM_SQLITE_SYNC", default_value = "full")]
    pub sqlite_sync: String,
}

pub fn tier_line(stats: &TierStats) -> String {
    let per = |bytes: u64, count: u64| {
        if count == 0 {
            "-".to_string()
        } else {
            format!("{:.0} B/msg", bytes as f64 / count as f64)
        }
    };
    format!(
        "hot {} messages, {} bytes ({}); cold {} messages in {} segments, {} bytes ({})",
        stats.hot_messages,
        stats.hot_bytes,
        per(stats.hot_bytes, stats.hot_messages),
        stats.cold_messages,
        stats.cold_segments,
        stats.cold_bytes,
        per(stats.cold_bytes, stats.cold_messages)
    )
}

pub fn run(args: ArchiveArgs) -> anyhow::Result<()> {
    let policy = args.tiering.policy()?;
    let durability = im_store::sqlite::Durability::parse(&args.sqlite_sync)
        .ok_or_else(|| anyhow::anyhow!("--sqlite-sync must be full or normal"))?;
    let uri = StoreUri::parse(args.store.as_deref(), &args.data_dir)?;
    if let StoreUri::Sqlite(dir) = &uri {
        let path = dir.join(im_store::sqlite::CONVERSATIONS_FILE);
        anyhow::ensure!(
            path.exists(),
            "{} does not exist: point --data-dir (or IM_STORE) at the system's data",
            path.display()
        );
    }
    let store = Stores::new(uri).conversations(Some(durability))?;
    let every = args
        .watch
        .as_deref()
        .map(im_runtime::config::parse_duration_secs)
        .transpose()?;
    loop {
        let started = std::time::Instant::now();
        let progress = crate::progress::Progress::spinner("archive");
        let report = store.archive(
            &policy,
            chrono::Utc::now().timestamp_millis(),
            &mut |report| {
                progress.say(format!(
                    "{} conversations, {} messages moved in {} segments, {} deleted",
                    report.conversations, report.moved, report.segments, report.deleted
                ));
            },
        )?;
        progress.finish();
        println!(
            "archived {} messages in {} segments, deleted {}, over {} conversations in {:.2}s; {}",
            report.moved,
            report.segments,
            report.deleted,
            report.conversations,
            started.elapsed().as_secs_f64(),
            tier_line(&store.tier_stats()?)
        );
        match every {
            Some(secs) if secs > 0 => {
                std::thread::sleep(std::time::Duration::from_secs(secs as u64))
            }
            _ => return Ok(()),
        }
    }
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Store backend: sqlite:///path or scylla://host1,host2/keyspace (default: the data directory).
    #[arg(long, env = "IM_STORE")]
    pub store: Option<String>,
    #[arg(long)]
    pub conversation: String,
    /// Messages before this seq (exclusive); the newest when absent.
    #[arg(long)]
    pub before_seq: Option<u64>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

pub fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let store =
        Stores::new(StoreUri::parse(args.store.as_deref(), &args.data_dir)?).conversations(None)?;
    let messages = store.history(
        &args.conversation,
        args.before_seq,
        args.limit.clamp(1, 10_000),
    )?;
    for message in &messages {
        if args.json {
            println!("{}", serde_json::to_string(message)?);
        } else {
            let text = match (&message.recalled_at, message.body.get("text")) {
                (Some(_), _) => "(recalled)".to_string(),
                (None, Some(text)) => text.as_str().unwrap_or_default().to_string(),
                (None, None) => message.body.to_string(),
            };
            println!(
                "{:>8}  {}  {}: {}",
                message.seq, message.sent_at, message.sender_id, text
            );
        }
    }
    if messages.is_empty() && !args.json {
        eprintln!(
            "no messages in {} before {:?}",
            args.conversation, args.before_seq
        );
    }
    Ok(())
}
