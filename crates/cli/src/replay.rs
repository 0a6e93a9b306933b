//! `imctl replay`: rebuild every store projection from JetStream into a
//! fresh store, with progress; resumable; `--verify` compares digests with
//! the live store.
//!
//! `IM_INGEST` is the source of truth. Replay reads it in stream order and
//! runs each event through the functions' own pure decisions in process —
//! ingest (validate, normalize), dedupe (idempotency, seq, membership),
//! fanout (recipients), unread (lists, counts, sync logs) — writing only the
//! target store: nothing is published, the live system is not touched. A
//! checkpoint file in the target holds the last stream sequence applied;
//! since every step is idempotent, a replay killed at any point resumes from
//! it and repeats at most one batch harmlessly.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use im_events::{Delivery, Timeline};
use im_runtime::stores::{StoreUri, Stores};
use im_runtime::{Incoming, Outcome};
use im_store::sqlite::Durability;
use im_store::{digest, ConversationStore, Fence, UserStore};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[arg(long, env = "IM_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Directory of the fresh embedded store to build (created if missing).
    #[arg(long)]
    pub into: PathBuf,
    /// Compare the rebuilt store's digests with the live store's.
    #[arg(long)]
    pub verify: bool,
    /// The live store, for --verify: its data directory...
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// ...or its IM_STORE URI.
    #[arg(long, env = "IM_STORE")]
    pub store: Option<String>,
    /// Events per batch (and per checkpoint).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Start over instead of resuming from the checkpoint.
    #[arg(long)]
    pub restart: bool,
    /// Must match the live dedupe's settings.
    #[arg(long, env = "IM_LARGE_GROUP_THRESHOLD", default_value_t = 500)]
    pub large_group_threshold: u64,
    #[arg(long, env = "IM_RECALL_WINDOW_SECS", default_value_t = 120)]
    pub recall_window_secs: i64,
    #[arg(long, env = "IM_MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,
}

const CHECKPOINT: &str = "replay.checkpoint";

fn headers_of(message: &async_nats::Message) -> Vec<(String, String)> {
    message
        .headers
        .iter()
        .flat_map(|headers| headers.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_string()))
        })
        .collect()
}

fn incoming(subject: String, payload: Bytes, stream_seq: u64, published_ms: i64) -> Incoming {
    Incoming {
        subject,
        headers: vec![],
        payload,
        stream_seq,
        delivered: 1,
        published_ms,
        // Replay derives everything in order from IM_INGEST: there is no
        // earlier message worth waiting for.
        held_ms: u64::MAX,
    }
}

/// The unkeyed events from `start` on that ingest's partition 0 copied
/// keyed (their copies name them, [`im_ingest::REKEYED_FROM`]): replay
/// processes the copy where live ingest did, in its conversation's order,
/// and skips the original. Earlier releases processed unkeyed events
/// where they were read; those have no copy and are processed as read.
/// Reads headers only.
async fn copied_originals(
    stream: &jetstream::stream::Stream,
    start: u64,
) -> anyhow::Result<std::collections::HashSet<u64>> {
    let mut originals = std::collections::HashSet::new();
    let mut consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            filter_subject: format!("{}.>", im_events::subjects::KEYED_STORED_PREFIX),
            headers_only: true,
            ..Default::default()
        })
        .await?;
    if consumer.info().await?.num_pending == 0 {
        return Ok(originals);
    }
    let mut messages = consumer.messages().await?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let Ok(Some(message)) = next else {
            anyhow::bail!("reading IM_INGEST's keyed events stopped; run replay again")
        };
        let message =
            message.map_err(|e| anyhow::anyhow!("reading IM_INGEST's keyed events: {e}"))?;
        let pending = message
            .info()
            .map_err(|e| anyhow::anyhow!("message without stream info: {e}"))?
            .pending;
        if let Some(original) = im_ingest::rekeyed_from(&headers_of(&message)) {
            originals.insert(original);
        }
        if pending == 0 {
            return Ok(originals);
        }
    }
}

/// What replaying one batch did.
#[derive(Default)]
struct Counts {
    events: u64,
    refused: u64,
    committed: u64,
    deliveries: u64,
}

struct Pipeline {
    conversations: std::sync::Arc<dyn ConversationStore>,
    users: std::sync::Arc<dyn UserStore>,
    ingest: im_ingest::Config,
    dedupe: im_dedupe::decide::Config,
    user_partitions: u32,
    /// Unkeyed events processed at their keyed copies instead.
    copied: std::collections::HashSet<u64>,
}

impl Pipeline {
    /// Run a batch of inbound events through every stage into the stores.
    fn apply(&self, batch: &[Incoming]) -> anyhow::Result<Counts> {
        let mut counts = Counts {
            events: batch.len() as u64,
            ..Counts::default()
        };
        let dedupe_fence = Fence {
            scope: im_dedupe::FUNCTION.into(),
            partition: 0,
            epoch: 1,
        };
        let unread_fence = Fence {
            scope: im_unread::FUNCTION.into(),
            partition: 0,
            epoch: 1,
        };
        let mut accepted = Vec::with_capacity(batch.len());
        for message in batch {
            if self.copied.contains(&message.stream_seq)
                && im_events::subjects::ingest_key_of_subject(&message.subject).is_none()
            {
                counts.events -= 1;
                continue;
            }
            match im_ingest::decide(message, &self.ingest) {
                Ok((subject, event)) => accepted.push(incoming(
                    subject,
                    serde_json::to_vec(&event)?.into(),
                    message.stream_seq,
                    message.published_ms,
                )),
                // Refused live too: it is in the dead letters.
                Err(_) => counts.refused += 1,
            }
        }
        let decision =
            im_dedupe::decide_batch(self.conversations.as_ref(), &self.dedupe, &accepted)?;
        counts.refused += decision
            .outcomes
            .iter()
            .filter(|o| !matches!(o, Outcome::Done))
            .count() as u64;
        if !decision.effects.is_empty() {
            self.conversations.apply(&dedupe_fence, &decision.effects)?;
        }
        let mut deliveries = Vec::new();
        for (event, stamp) in decision.outputs {
            if matches!(event, im_events::TimelineEvent::Committed(_)) {
                counts.committed += 1;
            }
            let (_, timeline): (u32, Timeline) = im_dedupe::timeline_event(event, stamp, 1);
            let users = im_fanout::recipients(
                &timeline.payload,
                &im_fanout::StoreMembers(self.conversations.as_ref()),
            )?;
            for (subject, _, delivery) in im_fanout::deliveries(
                &timeline.payload,
                users,
                self.user_partitions,
                &timeline.time,
            ) {
                let delivery: Delivery = delivery;
                deliveries.push(incoming(
                    subject,
                    serde_json::to_vec(&delivery)?.into(),
                    0,
                    0,
                ));
            }
        }
        counts.deliveries = deliveries.len() as u64;
        let (effects, _) = im_unread::decide_batch(
            self.users.as_ref(),
            Some(self.conversations.as_ref()),
            &deliveries,
        )?;
        if !effects.is_empty() {
            self.users.apply(&unread_fence, &effects)?;
        }
        Ok(counts)
    }
}

fn progress(done: u64, total: u64, started: Instant) {
    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
    let eta = if rate > 0.0 {
        (total.saturating_sub(done)) as f64 / rate
    } else {
        0.0
    };
    let percent = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    let width = 30;
    let filled = ((percent / 100.0) * width as f64) as usize;
    eprint!(
        "\rreplay [{}{}] {done}/{total} events ({percent:.0}%), {rate:.0}/s, ETA {eta:.0}s   ",
        "#".repeat(filled.min(width)),
        "-".repeat(width - filled.min(width))
    );
    let _ = std::io::stderr().flush();
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.into)?;
    let checkpoint_path = args.into.join(CHECKPOINT);
    let resume_from = if args.restart {
        None
    } else {
        std::fs::read_to_string(&checkpoint_path)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
    };
    if resume_from.is_none() {
        let existing = args.into.join(im_store::sqlite::CONVERSATIONS_FILE);
        anyhow::ensure!(
            args.restart || !existing.exists(),
            "{} already holds a store but no checkpoint: replay into an empty directory, or pass --restart to resume over it",
            args.into.display()
        );
    }
    let client = im_runtime::config::connect(&args.nats_url, "imctl-replay").await?;
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(im_events::subjects::STREAM_INGEST)
        .await
        .map_err(|e| {
            anyhow::anyhow!("no IM_INGEST stream ({e}); has the pipeline run against this server?")
        })?;
    let info = stream.info().await?.clone();
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let start = resume_from.map(|seq| seq + 1).unwrap_or(first).max(first);
    let total = last.saturating_sub(first) + u64::from(info.state.messages > 0);
    let copied = copied_originals(&stream, start).await?;
    let stores = Stores::new(StoreUri::Sqlite(args.into.clone()));
    let pipeline = std::sync::Arc::new(Pipeline {
        conversations: stores.conversations(Some(Durability::Normal))?,
        users: stores.users(Some(Durability::Normal))?,
        ingest: im_ingest::Config {
            max_body_bytes: args.max_body_bytes,
            conversation_partitions: im_runtime::topology::topology().partitions.conversation,
        },
        dedupe: im_dedupe::decide::Config {
            large_group_threshold: args.large_group_threshold,
            recall_window_ms: args.recall_window_secs * 1000,
        },
        user_partitions: im_runtime::topology::topology().partitions.user,
        copied,
    });
    eprintln!(
        "replay: IM_INGEST {first}..={last} into {}{}",
        args.into.display(),
        match resume_from {
            Some(seq) => format!(", resuming after {seq}"),
            None => String::new(),
        }
    );
    let started = Instant::now();
    let mut totals = Counts::default();
    if info.state.messages > 0 && start <= last {
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut batch: Vec<Incoming> = Vec::with_capacity(args.batch);
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
            let finished;
            match next {
                Ok(Some(Ok(message))) => {
                    let info = message
                        .info()
                        .map_err(|e| anyhow::anyhow!("message without stream info: {e}"))?;
                    let (seq, published) =
                        (info.stream_sequence, info.published.timestamp_millis());
                    let message = message.split().0;
                    batch.push(Incoming {
                        subject: message.subject.to_string(),
                        headers: headers_of(&message),
                        payload: message.payload.clone(),
                        stream_seq: seq,
                        delivered: 1,
                        published_ms: published,
                        held_ms: u64::MAX,
                    });
                    finished = seq >= last;
                }
                Ok(Some(Err(error))) => {
                    anyhow::bail!("reading IM_INGEST: {error}; run replay again to resume")
                }
                Ok(None) | Err(_) => finished = true,
            }
            if batch.len() >= args.batch || (finished && !batch.is_empty()) {
                let through = batch.last().map(|m| m.stream_seq).unwrap_or(0);
                let work = std::mem::take(&mut batch);
                let stage = pipeline.clone();
                let counts = tokio::task::spawn_blocking(move || stage.apply(&work)).await??;
                std::fs::write(&checkpoint_path, through.to_string())?;
                let done = through.saturating_sub(first) + 1;
                totals.events += counts.events;
                totals.refused += counts.refused;
                totals.committed += counts.committed;
                totals.deliveries += counts.deliveries;
                progress(done, total, started);
            }
            if finished {
                break;
            }
        }
    }
    progress(total, total, started);
    eprintln!();
    println!(
        "replayed {} events in {:.1}s ({} messages committed, {} refused as live, {} deliveries) into {}",
        totals.events,
        started.elapsed().as_secs_f64(),
        totals.committed,
        totals.refused,
        totals.deliveries,
        args.into.display()
    );
    if args.verify {
        let live = Stores::new(StoreUri::parse(args.store.as_deref(), &args.data_dir)?);
        let pairs = [
            (
                "conversation store",
                pipeline.conversations.dump()?,
                live.conversations(None)?.dump()?,
            ),
            (
                "user store",
                pipeline.users.dump()?,
                live.users(None)?.dump()?,
            ),
        ];
        let mut differ = 0;
        for (what, rebuilt, current) in pairs {
            let (a, b) = (digest(&rebuilt), digest(&current));
            if a == b {
                println!("{what}: identical (digest {a}, {} lines)", rebuilt.len());
            } else {
                differ += 1;
                let only_live = current.iter().filter(|l| !rebuilt.contains(l)).count();
                let only_rebuilt = rebuilt.iter().filter(|l| !current.contains(l)).count();
                println!("{what}: DIFFERS (rebuilt {a}, live {b}): {only_live} lines only live, {only_rebuilt} only rebuilt");
            }
        }
        anyhow::ensure!(
            differ == 0,
            "the rebuilt store differs from the live one; if the live system took traffic during the replay, run it again when quiet (it resumes)"
        );
    }
    Ok(())
}
