//! `imctl tail`: print events as JSON lines as they happen.

use clap::Args;
use futures::StreamExt;

#[derive(Args, Debug)]
pub struct TailArgs {
    #[arg(long, env = "IM_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Subject to follow (default: committed messages and rejections).
    #[arg(long, default_value = "im.events.>")]
    pub subject: String,
    /// Follow what is delivered to this user instead.
    #[arg(long)]
    pub user: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
}

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let client = im_runtime::config::connect(&args.nats_url, "imctl-tail").await?;
    let subject = match &args.user {
        Some(user) => {
            let partitions = im_runtime::topology::topology().partitions.user;
            format!(
                "im.delivery.{}.>",
                im_events::partition::partition_of(user, partitions)
            )
        }
        None => args.subject.clone(),
    };
    let mut subscription = client.subscribe(subject.clone()).await?;
    eprintln!("imctl: following {subject}");
    let mut printed = 0;
    while let Some(message) = subscription.next().await {
        let value: serde_json::Value =
            serde_json::from_slice(&message.payload).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&message.payload).into_owned())
            });
        if let Some(user) = &args.user {
            let for_user = value["data"]["users"]
                .as_array()
                .is_some_and(|users| users.iter().any(|u| u == user.as_str()));
            if !for_user {
                continue;
            }
        }
        println!(
            "{}",
            serde_json::json!({"subject": message.subject.as_str(), "event": value})
        );
        printed += 1;
        if args.count.is_some_and(|count| printed >= count) {
            break;
        }
    }
    Ok(())
}
