//! `imctl dlq list|show`: read the dead-letter stream.

use async_nats::jetstream;
use clap::{Args, Subcommand};
use im_runtime::dlq::{
    H_CODE, H_DELIVERED, H_FUNCTION, H_REASON, H_STREAM, H_STREAM_SEQ, H_SUBJECT, H_TIME,
};
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
    /// Send dead letters back where they came from (after a fix), then
    /// delete them. Idempotent: an event that was applied already changes
    /// nothing; a notification already sent is not sent again.
    Redrive {
        /// Dead-letter sequences (see `imctl dlq list`).
        sequences: Vec<u64>,
        /// Every dead letter (of --function, if given).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        function: Option<String>,
        /// Keep the dead letters after redriving them.
        #[arg(long)]
        keep: bool,
    },
    /// Delete dead letters for good.
    Purge {
        sequences: Vec<u64>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        function: Option<String>,
    },
}

/// The dead letters a redrive or purge names.
async fn selected(
    js: &jetstream::Context,
    sequences: &[u64],
    all: bool,
    function: Option<&str>,
) -> anyhow::Result<Vec<jetstream::message::StreamMessage>> {
    anyhow::ensure!(
        all || !sequences.is_empty(),
        "name dead letters by sequence (imctl dlq list) or pass --all"
    );
    let letters = read_all(js, function).await?;
    if all {
        return Ok(letters);
    }
    let mut chosen = Vec::new();
    for sequence in sequences {
        let letter = letters
            .iter()
            .find(|l| l.sequence == *sequence)
            .ok_or_else(|| {
                anyhow::anyhow!("no dead letter {sequence}; `imctl dlq list` shows them")
            })?;
        chosen.push(letter.clone());
    }
    Ok(chosen)
}

/// Where a dead letter goes back to: the stream subject it came from (with
/// its original headers and payload), or, for a notification the offline
/// function gave up on, that function's outbox.
pub async fn redrive_one(
    client: &async_nats::Client,
    js: &jetstream::Context,
    letter: &jetstream::message::StreamMessage,
) -> anyhow::Result<String> {
    if header(letter, H_STREAM) == "offline-outbox" {
        let record: Value = serde_json::from_slice(&letter.payload).map_err(|e| {
            anyhow::anyhow!("dead letter {} holds no notification: {e}", letter.sequence)
        })?;
        let partition = record["partition"].as_u64().unwrap_or(0);
        let request = json!({"id": record["id"]});
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.request(
                im_events::subjects::offline_redrive_subject(partition as u32),
                request.to_string().into(),
            ),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the offline function did not answer; is it running?"))?
        .map_err(|e| {
            anyhow::anyhow!("the offline function did not answer ({e}); is it running?")
        })?;
        let answer: Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
        anyhow::ensure!(answer["ok"] == json!(true), "offline refused: {answer}");
        return Ok(format!(
            "notification {} -> {}",
            record["id"].as_str().unwrap_or_default(),
            answer["status"].as_str().unwrap_or_default()
        ));
    }
    let subject = im_events::subjects::republish_subject(&header(letter, H_SUBJECT));
    anyhow::ensure!(
        !subject.is_empty(),
        "dead letter {} names no original subject",
        letter.sequence
    );
    let mut headers = async_nats::HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        let name = name.to_string();
        if name.starts_with("Im-Dlq-") || name.starts_with("Nats-") {
            continue;
        }
        for value in values {
            headers.append(name.as_str(), value.as_str());
        }
    }
    // A new message id: the original's would be dropped as a duplicate
    // within the window; a second redrive of this letter is not.
    headers.insert(
        "Nats-Msg-Id",
        format!("redrive:{}", letter.sequence).as_str(),
    );
    js.publish_with_headers(subject.clone(), headers, letter.payload.clone())
        .await?
        .await
        .map_err(|e| anyhow::anyhow!("redrive of {} not stored: {e}", letter.sequence))?;
    Ok(format!("-> {subject}"))
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
        DlqCommand::Redrive {
            sequences,
            all,
            function,
            keep,
        } => {
            let letters = selected(&js, &sequences, all, function.as_deref()).await?;
            let stream = js.get_stream(im_events::subjects::STREAM_DLQ).await?;
            let client = js.client();
            let (mut done, mut failed) = (0, 0);
            for (index, letter) in letters.iter().enumerate() {
                match redrive_one(&client, &js, letter).await {
                    Ok(what) => {
                        done += 1;
                        if !keep {
                            stream.delete_message(letter.sequence).await.map_err(|e| {
                                anyhow::anyhow!("redriven {} but not deleted: {e}", letter.sequence)
                            })?;
                        }
                        eprintln!(
                            "[{}/{}] redriven {} {what}",
                            index + 1,
                            letters.len(),
                            letter.sequence
                        );
                    }
                    Err(error) => {
                        failed += 1;
                        eprintln!(
                            "[{}/{}] {} not redriven: {error:#}",
                            index + 1,
                            letters.len(),
                            letter.sequence
                        );
                    }
                }
            }
            println!(
                "redriven {done}, failed {failed}{}",
                if keep { " (kept)" } else { "" }
            );
            anyhow::ensure!(
                failed == 0,
                "{failed} dead letters were not redriven; they are still in IM_DLQ"
            );
        }
        DlqCommand::Purge {
            sequences,
            all,
            function,
        } => {
            let letters = selected(&js, &sequences, all, function.as_deref()).await?;
            let stream = js.get_stream(im_events::subjects::STREAM_DLQ).await?;
            for letter in &letters {
                stream.delete_message(letter.sequence).await?;
            }
            println!("purged {}", letters.len());
        }
    }
    Ok(())
}
