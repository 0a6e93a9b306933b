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
/// keyed (their copies name them, [`im_events::admission::REKEYED_FROM`]), each with
/// a digest of its copy's payload: replay processes the copy where live
/// ingest did, in its conversation's order, and skips the original — but
/// only one whose payload is the copy's, so a publisher on the bus that
/// forges the header cannot make replay drop someone else's event.
/// Earlier releases processed unkeyed events where they were read; those
/// have no copy and are processed as read. Reads headers, and the payload
/// of the copies only.
async fn copied_originals(
    stream: &jetstream::stream::Stream,
    start: u64,
) -> anyhow::Result<std::collections::HashMap<u64, u64>> {
    let mut originals = std::collections::HashMap::new();
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
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("message without stream info: {e}"))?;
        let (pending, copy_seq) = (info.pending, info.stream_sequence);
        if let Some(original) = im_events::admission::rekeyed_from(&headers_of(&message)) {
            let copy = stream.get_raw_message(copy_seq).await.map_err(|e| {
                anyhow::anyhow!("reading the copy at {copy_seq}: {e}; run replay again")
            })?;
            originals.insert(original, digest_of(&copy.payload));
        }
        if pending == 0 {
            return Ok(originals);
        }
    }
}

fn digest_of(payload: &[u8]) -> u64 {
    im_events::partition::fnv1a64(payload)
}

/// Pure: whether replay skips `message` because a copy of it is processed
/// instead (unkeyed, named by a copy with the same payload).
pub fn replaced_by_copy(copied: &std::collections::HashMap<u64, u64>, message: &Incoming) -> bool {
    im_events::subjects::ingest_key_of_subject(&message.subject).is_none()
        && copied.get(&message.stream_seq) == Some(&digest_of(&message.payload))
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
    dedupe: im_dedupe::decide::Config,
    user_partitions: u32,
    /// Unkeyed events processed at their keyed copies instead (original
    /// seq → digest of the copy's payload).
    copied: std::collections::HashMap<u64, u64>,
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
        // Dedupe admits what it reads (as live, where the server stored
        // it): keyed events, and unkeyed ones from releases before ingest
        // copied them keyed.
        let mut inbound = Vec::with_capacity(batch.len());
        for message in batch {
            if replaced_by_copy(&self.copied, message) {
                counts.events -= 1;
                continue;
            }
            inbound.push(message.clone());
        }
        let decision =
            im_dedupe::decide_batch(self.conversations.as_ref(), &self.dedupe, &inbound)?;
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
        let im_unread::BatchDecision { effects, .. } = im_unread::decide_batch(
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

/// Where a replay got to in each IM_INGEST stream (the stream, or each of
/// its shards): `name=seq` lines; a bare number (older releases) is the
/// unsharded stream's.
pub fn parse_checkpoint(text: &str) -> std::collections::BTreeMap<String, u64> {
    let text = text.trim();
    if let Ok(seq) = text.parse::<u64>() {
        return [(im_events::subjects::STREAM_INGEST.to_string(), seq)].into();
    }
    text.lines()
        .filter_map(|line| {
            let (name, seq) = line.split_once('=')?;
            Some((name.trim().to_string(), seq.trim().parse().ok()?))
        })
        .collect()
}

fn format_checkpoint(through: &std::collections::BTreeMap<String, u64>) -> String {
    through
        .iter()
        .map(|(name, seq)| format!("{name}={seq}\n"))
        .collect()
}

/// Pure: which of the streams' next messages comes first: the one stored
/// earliest (the order live ingest saw them in, as near as the stores'
/// clocks tell), ties by stream.
pub fn earliest(heads: &[Option<(i64, u64)>]) -> Option<usize> {
    heads
        .iter()
        .enumerate()
        .filter_map(|(index, head)| head.map(|(published, _)| (published, index)))
        .min()
        .map(|(_, index)| index)
}

/// One IM_INGEST stream read in order from where the replay resumes.
struct Reader {
    name: String,
    first: u64,
    last: u64,
    messages: Option<jetstream::consumer::pull::Ordered>,
    head: Option<Incoming>,
}

impl Reader {
    /// The next message, if the stream has one up to `last`.
    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.head.is_some() {
            return Ok(());
        }
        let Some(messages) = self.messages.as_mut() else {
            return Ok(());
        };
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        match next {
            Ok(Some(Ok(message))) => {
                let info = message
                    .info()
                    .map_err(|e| anyhow::anyhow!("message without stream info: {e}"))?;
                let (seq, published) = (info.stream_sequence, info.published.timestamp_millis());
                // The last one, or none left (the last may have aged out).
                let done = seq >= self.last || info.pending == 0;
                let message = message.split().0;
                if done {
                    self.messages = None;
                }
                self.head = Some(Incoming {
                    subject: message.subject.to_string(),
                    headers: headers_of(&message),
                    payload: message.payload.clone(),
                    stream_seq: seq,
                    delivered: 1,
                    published_ms: published,
                    held_ms: u64::MAX,
                });
            }
            Ok(Some(Err(error))) => {
                anyhow::bail!("reading {}: {error}; run replay again to resume", self.name)
            }
            // Messages were left when the replay began: one that does not
            // come is a stalled server, not the end; say so rather than
            // finish with a partial store.
            Ok(None) | Err(_) => anyhow::bail!(
                "reading {} stalled before its last message ({}); run replay again to resume",
                self.name,
                self.last
            ),
        }
        Ok(())
    }
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.into)?;
    let checkpoint_path = args.into.join(CHECKPOINT);
    let resume_from = if args.restart {
        None
    } else {
        std::fs::read_to_string(&checkpoint_path)
            .ok()
            .map(|text| parse_checkpoint(&text))
            .filter(|through| !through.is_empty())
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
    // The source of truth: IM_INGEST, or its shards.
    let names: Vec<String> = im_runtime::topology::pipeline_streams(&js)
        .await?
        .into_iter()
        .filter(|name| im_runtime::topology::base_name(name) == im_events::subjects::STREAM_INGEST)
        .collect();
    anyhow::ensure!(
        !names.is_empty(),
        "no IM_INGEST stream; has the pipeline run against this server?"
    );
    let resume_from = resume_from.unwrap_or_default();
    let mut readers = Vec::new();
    let mut copied = std::collections::HashMap::new();
    let mut total = 0;
    for name in &names {
        let mut stream = js.get_stream(name).await?;
        let info = stream.info().await?.clone();
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let start = resume_from
            .get(name)
            .map(|seq| seq + 1)
            .unwrap_or(first)
            .max(first);
        total += last.saturating_sub(first) + u64::from(info.state.messages > 0);
        copied.extend(copied_originals(&stream, start).await?);
        let messages = if info.state.messages > 0 && start <= last {
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: start,
                    },
                    ..Default::default()
                })
                .await?;
            Some(consumer.messages().await?)
        } else {
            None
        };
        readers.push(Reader {
            name: name.clone(),
            first,
            last,
            messages,
            head: None,
        });
    }
    // The partition count the streams were made for (ingest checks that a
    // keyed event sits in its key's partition).
    let partitions = im_runtime::topology::existing_partitions(&js)
        .await
        .unwrap_or(im_runtime::topology::topology().partitions.conversation);
    let stores = Stores::new(StoreUri::Sqlite(args.into.clone()));
    let pipeline = std::sync::Arc::new(Pipeline {
        conversations: stores.conversations(Some(Durability::Normal))?,
        users: stores.users(Some(Durability::Normal))?,
        dedupe: im_dedupe::decide::Config {
            large_group_threshold: args.large_group_threshold,
            recall_window_ms: args.recall_window_secs * 1000,
            admission: im_events::admission::Rules {
                max_body_bytes: args.max_body_bytes,
                conversation_partitions: partitions,
            },
        },
        user_partitions: partitions,
        copied,
    });
    eprintln!(
        "replay: {} into {}{}",
        readers
            .iter()
            .map(|r| format!("{} {}..={}", r.name, r.first, r.last))
            .collect::<Vec<_>>()
            .join(", "),
        args.into.display(),
        if resume_from.is_empty() {
            String::new()
        } else {
            format!(
                ", resuming after {}",
                format_checkpoint(&resume_from).trim().replace('\n', ", ")
            )
        }
    );
    let started = Instant::now();
    let progress = crate::progress::Progress::bar("replay", "events", total);
    let mut totals = Counts::default();
    let mut through = resume_from.clone();
    let mut batch: Vec<Incoming> = Vec::with_capacity(args.batch);
    let mut batch_through = through.clone();
    loop {
        for reader in readers.iter_mut() {
            reader.fill().await?;
        }
        let heads: Vec<Option<(i64, u64)>> = readers
            .iter()
            .map(|r| r.head.as_ref().map(|m| (m.published_ms, m.stream_seq)))
            .collect();
        let next = earliest(&heads);
        if let Some(index) = next {
            let reader = &mut readers[index];
            let message = reader.head.take().expect("a head");
            batch_through.insert(reader.name.clone(), message.stream_seq);
            batch.push(message);
        }
        let finished = next.is_none();
        if batch.len() >= args.batch || (finished && !batch.is_empty()) {
            let work = std::mem::take(&mut batch);
            let stage = pipeline.clone();
            let counts = tokio::task::spawn_blocking(move || stage.apply(&work)).await??;
            through = batch_through.clone();
            std::fs::write(&checkpoint_path, format_checkpoint(&through))?;
            let done: u64 = readers
                .iter()
                .map(|r| {
                    through
                        .get(&r.name)
                        .map_or(0, |seq| seq.saturating_sub(r.first) + 1)
                })
                .sum();
            totals.events += counts.events;
            totals.refused += counts.refused;
            totals.committed += counts.committed;
            totals.deliveries += counts.deliveries;
            progress.set(done);
        }
        if finished {
            break;
        }
    }
    progress.set(total);
    progress.finish();
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

#[cfg(test)]
mod tests;
