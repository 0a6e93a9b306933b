//! `imctl dlq list|show`: read the dead-letter stream.

use async_nats::jetstream;
use clap::{Args, Subcommand};
use im_runtime::dlq::{H_CODE, H_DELIVERED, H_FUNCTION, H_REASON, H_STREAM_SEQ, H_SUBJECT, H_TIME};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct DlqArgs {
    #[arg(
        long,
        env = "IM_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// One line per dead letter: sequence, function, code, reason.
    List {
        /// Only this function's dead letters.
        #[arg(long)]
        function: Option<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// At most this many, newest last.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Everything about one dead letter: headers and original payload.
    Show { sequence: u64 },
}

fn header(message: &jetstream::message::StreamMessage, name: &str) -> String {
    message
        .headers
        .get(name)
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}

pub fn summary(message: &jetstream::message::StreamMessage) -> Value {
    json!({
        "sequence": message.sequence,
        "function": header(message, H_FUNCTION),
        "code": header(message, H_CODE),
        "reason": header(message, H_REASON),
        "subject": header(message, H_SUBJECT),
        "original_stream_seq": header(message, H_STREAM_SEQ),
        "deliveries": header(message, H_DELIVERED),
        "time": header(message, H_TIME),
    })
}

/// Every dead letter, oldest first (optionally one function's).
pub async fn read_all(
    js: &jetstream::Context,
    function: Option<&str>,
) -> anyhow::Result<Vec<jetstream::message::StreamMessage>> {
    let stream = js
        .get_stream(im_events::subjects::STREAM_DLQ)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "no dead-letter stream ({error}); has the pipeline run against this server?"
            )
        })?;
    let info = stream.get_info().await?;
    let mut letters = Vec::new();
    if info.state.messages == 0 {
        return Ok(letters);
    }
    for sequence in info.state.first_sequence..=info.state.last_sequence {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        if function.is_some_and(|f| header(&message, H_FUNCTION) != f) {
            continue;
        }
        letters.push(message);
    }
    Ok(letters)
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let client = im_runtime::config::connect(&args.nats_url, "imctl-dlq").await?;
    let js = jetstream::new(client);
    match args.command {
        DlqCommand::List {
            function,
            json,
            limit,
        } => {
            let letters = read_all(&js, function.as_deref()).await?;
            let skip = letters.len().saturating_sub(limit);
            if !json {
                println!("{:>8}  {:<8}  {:<22}  REASON", "SEQ", "FUNCTION", "CODE");
            }
            for message in letters.iter().skip(skip) {
                let line = summary(message);
                if json {
                    println!("{line}");
                } else {
                    println!(
                        "{:>8}  {:<8}  {:<22}  {}",
                        message.sequence,
                        line["function"].as_str().unwrap_or_default(),
                        line["code"].as_str().unwrap_or_default(),
                        line["reason"].as_str().unwrap_or_default()
                    );
                }
            }
            if letters.is_empty() {
                eprintln!("imctl: no dead letters");
            }
        }
        DlqCommand::Show { sequence } => {
            let stream = js.get_stream(im_events::subjects::STREAM_DLQ).await?;
            let message = stream.get_raw_message(sequence).await.map_err(|error| {
                anyhow::anyhow!(
                    "no dead letter {sequence}: {error}; `imctl dlq list` shows the sequences"
                )
            })?;
            let headers: serde_json::Map<String, Value> = message
                .headers
                .iter()
                .map(|(name, values)| {
                    (
                        name.to_string(),
                        json!(values.iter().map(|v| v.as_str()).collect::<Vec<_>>()),
                    )
                })
                .collect();
            let payload = String::from_utf8_lossy(&message.payload).into_owned();
            let mut shown = summary(&message);
            shown["headers"] = Value::Object(headers);
            shown["payload"] = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
    }
    Ok(())
}
