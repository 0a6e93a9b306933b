//! `imctl send`: publish one CloudEvent, structured (default) or binary mode.

use async_nats::HeaderMap;
use clap::Args;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct SendArgs {
    #[arg(long, env = "IM_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Event type, e.g. im.message.send.
    #[arg(long = "type", default_value = "im.message.send")]
    pub event_type: String,
    /// The event's data as JSON. For messages, --conversation/--sender/--text build it.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub conversation: Option<String>,
    #[arg(long)]
    pub sender: Option<String>,
    #[arg(long)]
    pub text: Option<String>,
    /// CloudEvents source.
    #[arg(long, default_value = "urn:imctl")]
    pub source: String,
    /// CloudEvents id (default: a new UUID).
    #[arg(long)]
    pub id: Option<String>,
    /// Use binary content mode (ce-* headers) instead of structured.
    #[arg(long)]
    pub binary: bool,
}

pub fn build_data(args: &SendArgs) -> anyhow::Result<Value> {
    if let Some(data) = &args.data {
        return serde_json::from_str(data)
            .map_err(|error| anyhow::anyhow!("--data is not JSON: {error}"));
    }
    match (&args.conversation, &args.sender, &args.text) {
        (Some(conversation), Some(sender), Some(text)) if args.event_type == "im.message.send" => {
            Ok(json!({
                "conversation_id": conversation, "sender_id": sender, "kind": "text", "body": {"text": text}
            }))
        }
        _ => {
            anyhow::bail!("give --data JSON, or --conversation, --sender and --text for a message")
        }
    }
}

pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let data = build_data(&args)?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let client = im_runtime::config::connect(&args.nats_url, "imctl").await?;
    let js = async_nats::jetstream::new(client);
    let subject = im_events::subjects::ingest_subject_for(&args.event_type, &data);
    let time = im_events::rfc3339_ms(chrono::Utc::now().timestamp_millis());
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        im_events::ids::nats_msg_id(&args.source, &id).as_str(),
    );
    let payload = if args.binary {
        headers.insert("ce-specversion", "1.0");
        headers.insert("ce-id", id.as_str());
        headers.insert("ce-source", args.source.as_str());
        headers.insert("ce-type", args.event_type.as_str());
        headers.insert("ce-time", time.as_str());
        headers.insert("content-type", "application/json");
        serde_json::to_vec(&data)?
    } else {
        headers.insert("content-type", "application/cloudevents+json");
        serde_json::to_vec(&json!({
            "specversion": "1.0", "id": id, "source": args.source, "type": args.event_type,
            "time": time, "datacontenttype": "application/json", "data": data,
        }))?
    };
    let ack = js
        .publish_with_headers(subject.clone(), headers, payload.into())
        .await?
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "publish to {subject} was not acknowledged: {error}; is `imctl up` running?"
            )
        })?;
    println!(
        "{}",
        json!({"subject": subject, "id": id, "stream": ack.stream, "stream_seq": ack.sequence, "duplicate": ack.duplicate})
    );
    Ok(())
}
