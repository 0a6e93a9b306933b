//! Streams and consumers, read from `schemas/streams.json` (embedded at build
//! time) and created or updated idempotently at start-up.

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use serde::Deserialize;

const STREAMS_JSON: &str = include_str!("../../../schemas/streams.json");

#[derive(Debug, Clone, Deserialize)]
pub struct Topology {
    pub partitions: Partitions,
    pub streams: Vec<StreamDef>,
    pub consumers: Vec<ConsumerDef>,
    pub consumer_defaults: ConsumerDefaults,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Partitions {
    pub conversation: u32,
    pub user: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Republish {
    pub src: String,
    pub dest: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamDef {
    pub name: String,
    pub subjects: Vec<String>,
    pub max_age_secs: u64,
    /// The most the stream keeps on disk; full, it refuses new messages.
    #[serde(default)]
    pub max_bytes: Option<i64>,
    pub duplicate_window_secs: u64,
    #[serde(default)]
    pub republish: Option<Republish>,
    /// Stores keyed ingest subjects under their partition (see
    /// [`im_events::subjects::keyed_ingest_transform`]).
    #[serde(default)]
    pub keyed: bool,
    /// A partitioned stream: the subjects of partition `{p}`. With
    /// `IM_STREAM_SHARDS` > 1 its partitions are spread over that many
    /// streams ([`shard_defs`]).
    #[serde(default)]
    pub partition_subjects: Option<String>,
    /// Sharded, the subjects shard 0 also holds (ingest's unkeyed events).
    #[serde(default)]
    pub shard_0_also: Vec<String>,
    /// The shards the stream this def describes is one of (1: unsharded);
    /// set by [`shard_defs`].
    #[serde(skip, default = "one")]
    pub shards: u32,
    pub description: String,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerDef {
    pub function: String,
    pub stream: String,
    pub durable: String,
    pub filter: String,
    pub partitioned_by: Option<String>,
    /// Durable names (with `{p}`) of earlier releases' consumers whose
    /// place this one takes: before any partition is taken over,
    /// [`migrate_predecessors`] starts this consumer right after their ack
    /// floor and deletes them (a name matches with or without an
    /// `-e<epoch>` suffix).
    #[serde(default)]
    pub predecessors: Vec<String>,
    /// The input earlier releases fed this function through, drained
    /// before anything new is read (see `consumer::drain_retired`).
    #[serde(default)]
    pub retired: Option<RetiredInput>,
    /// One ack covers every message before it (`AckPolicy::All`): a batch
    /// costs one ack, not one per message. Only for a function whose
    /// handler never holds a message back while acking later ones.
    #[serde(default)]
    pub ack_all: bool,
    /// How long a batch that is not full waits for more messages
    /// (`linger_ms`; 0: none). Only for stages off the sender's path.
    #[serde(default, rename = "linger_ms", deserialize_with = "millis")]
    pub linger: Duration,
    /// How long a batch that already holds [`BUSY_BATCH`] messages without
    /// waiting (the stage is behind: messages come faster than it commits)
    /// waits for more (`busy_linger_ms`; 0: never). For a stage on the
    /// sender's path: at a moderate rate its batches stay small and nothing
    /// waits, and under load each commit carries more messages, so it
    /// writes fewer pages and makes fewer wake-ups per message.
    #[serde(default, rename = "busy_linger_ms", deserialize_with = "millis")]
    pub busy_linger: Duration,
}

/// What a batch must already hold, unwaited for, before a stage with a
/// `busy_linger` waits for more.
pub const BUSY_BATCH: usize = 8;

impl ConsumerDef {
    /// How long a batch of `ready` messages (of at most `full`) waits for
    /// more: a stage off the sender's path its `linger` whenever the batch
    /// is not full; a stage on it its `busy_linger`, only when the batch is
    /// already [`BUSY_BATCH`] long.
    pub fn linger_for(&self, ready: usize, full: usize) -> Duration {
        if ready == 0 || ready >= full {
            Duration::ZERO
        } else if !self.linger.is_zero() {
            self.linger
        } else if ready >= BUSY_BATCH {
            self.busy_linger
        } else {
            Duration::ZERO
        }
    }
}

fn millis<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    Ok(Duration::from_millis(u64::deserialize(deserializer)?))
}

/// A stream an earlier release fed a function through, and that release's
/// consumers of it: what they left unread is applied first, in their
/// partitions' order, and then they are deleted.
#[derive(Debug, Clone, Deserialize)]
pub struct RetiredInput {
    /// The stream (or, sharded, each `<stream>_S<s>`).
    pub stream: String,
    /// The durable name of partition `{p}`'s consumer.
    pub durable: String,
    /// Its filter.
    pub filter: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerDefaults {
    pub ack_wait_secs: u64,
    pub max_deliver: i64,
    pub max_ack_pending: i64,
    pub fetch_batch: usize,
}

/// The topology of this process: `schemas/streams.json`, with the partition
/// count of every partitioned stage set by `IM_PARTITIONS` if it is (every
/// process of a deployment must agree; [`ensure_streams`] refuses to start
/// when the streams were created with another count).
pub fn topology() -> &'static Topology {
    static TOPOLOGY: OnceLock<Topology> = OnceLock::new();
    TOPOLOGY.get_or_init(|| {
        let mut topology: Topology =
            serde_json::from_str(STREAMS_JSON).expect("schemas/streams.json is valid");
        if let Some(count) = partitions_from_env() {
            topology.partitions.conversation = count;
            topology.partitions.user = count;
        }
        linger_from_env(&mut topology.consumers, "IM_LINGER_MS", |d| &mut d.linger);
        linger_from_env(&mut topology.consumers, "IM_BUSY_LINGER_MS", |d| {
            &mut d.busy_linger
        });
        topology
    })
}

/// Most partitions a stage may have: one process owns at most this many
/// partitions' publishers at once.
pub const MAX_PARTITIONS: u32 = crate::publish::MAX_CONCURRENT_PUBLISHERS as u32;

/// `IM_LINGER_MS` and `IM_BUSY_LINGER_MS`: how long the stages that wait
/// for fuller batches wait (0: not at all), instead of
/// `schemas/streams.json`'s `linger_ms` and `busy_linger_ms`. Only a stage
/// that waits there is changed: the others' zero stays.
fn linger_from_env(
    consumers: &mut [ConsumerDef],
    name: &str,
    field: impl Fn(&mut ConsumerDef) -> &mut Duration,
) {
    if let Some(linger) = millis_from_env(name) {
        for def in consumers.iter_mut() {
            let value = field(def);
            if !value.is_zero() {
                *value = linger;
            }
        }
    }
}

fn millis_from_env(name: &str) -> Option<Duration> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse::<u64>() {
        Ok(ms) if ms <= 1_000 => Some(Duration::from_millis(ms)),
        _ => {
            eprintln!("{name}={text:?} is not a number of milliseconds up to 1000; using schemas/streams.json's");
            None
        }
    }
}

fn partitions_from_env() -> Option<u32> {
    let text = std::env::var("IM_PARTITIONS").ok()?;
    match text.trim().parse::<u32>() {
        Ok(count) if (1..=MAX_PARTITIONS).contains(&count) => Some(count),
        _ => {
            eprintln!(
                "IM_PARTITIONS={text:?} is not a partition count of 1..={MAX_PARTITIONS}; using schemas/streams.json's"
            );
            None
        }
    }
}

/// The stream metadata key that records the partition count the pipeline's
/// streams were created for.
pub const PARTITIONS_METADATA: &str = "im.partitions";

impl Topology {
    pub fn consumer(&self, function: &str) -> Option<&ConsumerDef> {
        self.consumers.iter().find(|c| c.function == function)
    }

    /// How many partitions a consumer has (1 if it is not partitioned).
    pub fn partition_count(&self, def: &ConsumerDef) -> u32 {
        match def.partitioned_by.as_deref() {
            Some("conversation") => self.partitions.conversation,
            Some("user") => self.partitions.user,
            _ => 1,
        }
    }
}

/// Replicas for every stream: 1 on a single server, 3 in a cluster (set
/// `IM_STREAM_REPLICAS`).
pub fn stream_replicas() -> usize {
    std::env::var("IM_STREAM_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// `IM_STREAM_MAX_BYTES`: lower bounds than `schemas/streams.json` gives,
/// for small disks (and tests): a number of bytes for every stream, or
/// `STREAM=bytes,…` for some.
pub fn stream_max_bytes_override() -> Result<MaxBytes, String> {
    MaxBytes::parse(&std::env::var("IM_STREAM_MAX_BYTES").unwrap_or_default())
}

/// Bounds on streams' sizes beyond `schemas/streams.json`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaxBytes {
    every: Option<i64>,
    by_stream: Vec<(String, i64)>,
}

impl MaxBytes {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut bounds = MaxBytes::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (stream, bytes) = match part.split_once('=') {
                Some((stream, bytes)) => (Some(stream.trim()), bytes.trim()),
                None => (None, part),
            };
            let bytes: i64 = bytes
                .parse()
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| format!("IM_STREAM_MAX_BYTES: {part:?} is not a positive number of bytes (e.g. 1073741824 or IM_INGEST=1073741824)"))?;
            match stream {
                Some(stream) => bounds.by_stream.push((stream.to_string(), bytes)),
                None => bounds.every = Some(bytes),
            }
        }
        Ok(bounds)
    }

    /// The bound of `def`: the lowest of its own and these (a shard gets
    /// its share of its stream's named bound).
    pub fn of(&self, def: &StreamDef) -> Option<i64> {
        let named = self
            .by_stream
            .iter()
            .find(|(stream, _)| stream == base_name(&def.name))
            .map(|(_, bytes)| *bytes / i64::from(def.shards.max(1)));
        [def.max_bytes, self.every, named]
            .into_iter()
            .flatten()
            .min()
    }
}

pub fn stream_config(def: &StreamDef) -> stream::Config {
    stream_config_with(
        def,
        stream_replicas(),
        topology().partitions.conversation,
        &stream_max_bytes_override().unwrap_or_default(),
    )
}

/// A stream's configuration with `replicas` copies, for `partitions`.
pub fn stream_config_with(
    def: &StreamDef,
    replicas: usize,
    partitions: u32,
    bounds: &MaxBytes,
) -> stream::Config {
    let max_bytes = bounds.of(def);
    stream::Config {
        max_bytes: max_bytes.unwrap_or(-1),
        // Full, a stream refuses what comes: an acked message is never
        // dropped to make room.
        discard: stream::DiscardPolicy::New,
        name: def.name.clone(),
        description: Some(def.description.clone()),
        metadata: std::collections::HashMap::from([
            (PARTITIONS_METADATA.to_string(), partitions.to_string()),
            (SHARDS_METADATA.to_string(), def.shards.max(1).to_string()),
        ]),
        subjects: def.subjects.clone(),
        max_age: Duration::from_secs(def.max_age_secs),
        duplicate_window: Duration::from_secs(def.duplicate_window_secs),
        storage: stream::StorageType::File,
        num_replicas: replicas,
        republish: def.republish.as_ref().map(|r| stream::Republish {
            source: r.src.clone(),
            destination: r.dest.clone(),
            headers_only: false,
        }),
        subject_transform: def.keyed.then(|| {
            let (source, destination) = im_events::subjects::keyed_ingest_transform(partitions);
            stream::SubjectTransform {
                source,
                destination,
            }
        }),
        ..Default::default()
    }
}

/// Create every stream, or bring an existing one's config up to date.
pub async fn ensure_streams(js: &jetstream::Context) -> crate::Result<()> {
    let bounds = stream_max_bytes_override().map_err(crate::Error::Config)?;
    ensure_sharded_streams(
        js,
        stream_replicas(),
        topology().partitions.conversation,
        stream_shards(),
        &bounds,
    )
    .await
}

/// [`ensure_streams`] with `replicas` copies of every stream, for
/// `partitions` partitions, unsharded.
pub async fn ensure_streams_with(
    js: &jetstream::Context,
    replicas: usize,
    partitions: u32,
    bounds: &MaxBytes,
) -> crate::Result<()> {
    ensure_sharded_streams(js, replicas, partitions, 1, bounds).await
}

/// The shard count the partitioned stream `base` was created with on this
/// server: 1 unsharded, the recorded count when sharded, None if it does
/// not exist.
async fn existing_shards(js: &jetstream::Context, base: &str) -> Option<u32> {
    if js.get_stream(base).await.is_ok() {
        return Some(1);
    }
    let mut first = js.get_stream(shard_name(base, 0)).await.ok()?;
    let info = first.info().await.ok()?;
    Some(
        info.config
            .metadata
            .get(SHARDS_METADATA)
            .and_then(|count| count.parse().ok())
            .unwrap_or(0),
    )
}

/// Refuse to run with another shard count than the streams have: events
/// would go to streams (and partitions) nobody reads.
pub fn check_shards(stream: &str, existing: Option<u32>, configured: u32) -> crate::Result<()> {
    match existing {
        Some(existing) if existing != configured => crate::bail_config!(
            "stream {stream} is split into {existing} shard(s) on this server, but this process is configured for {configured} (IM_STREAM_SHARDS): run every process with IM_STREAM_SHARDS={existing}. The shard count is fixed per deployment: to change it, start a new deployment with the new count and move the clients to it"
        ),
        _ => Ok(()),
    }
}

/// [`ensure_streams`] with `replicas` copies of every stream, for
/// `partitions` partitions, partitioned streams split into `shards`.
pub async fn ensure_sharded_streams(
    js: &jetstream::Context,
    replicas: usize,
    partitions: u32,
    shards: u32,
    bounds: &MaxBytes,
) -> crate::Result<()> {
    for base in &topology().streams {
        if base.partition_subjects.is_some() {
            check_shards(&base.name, existing_shards(js, &base.name).await, shards)?;
        }
        for def in shard_defs(base, shards, partitions) {
            ensure_stream(js, &def, replicas, partitions, bounds).await?;
        }
    }
    Ok(())
}

async fn ensure_stream(
    js: &jetstream::Context,
    def: &StreamDef,
    replicas: usize,
    partitions: u32,
    bounds: &MaxBytes,
) -> crate::Result<()> {
    let config = stream_config_with(def, replicas, partitions, bounds);
    match js.get_stream(&def.name).await {
        Ok(mut existing) => {
            let created_for = existing
                .info()
                .await
                .ok()
                .and_then(|info| info.config.metadata.get(PARTITIONS_METADATA).cloned());
            check_partitions(&def.name, created_for.as_deref(), partitions)?;
            js.update_stream(&config)
                .await
                .map_err(|error| crate::nats_error!("update stream {}: {error}", def.name))?;
        }
        Err(_) => {
            if let Err(error) = js.create_stream(config.clone()).await {
                // Another process may have created it meanwhile.
                js.get_stream(&def.name)
                    .await
                    .map_err(|_| crate::nats_error!("create stream {}: {error}", def.name))?;
            }
        }
    }
    Ok(())
}

/// The partition count the pipeline's streams on this server were created
/// for, if they exist (streams from before the count was recorded: 16).
pub async fn existing_partitions(js: &jetstream::Context) -> Option<u32> {
    // A partitioned stream every release has had.
    let timeline = im_events::subjects::STREAM_TIMELINE;
    let mut stream = match js.get_stream(timeline).await {
        Ok(stream) => stream,
        Err(_) => js.get_stream(shard_name(timeline, 0)).await.ok()?,
    };
    let info = stream.info().await.ok()?;
    Some(
        info.config
            .metadata
            .get(PARTITIONS_METADATA)
            .and_then(|count| count.parse().ok())
            .unwrap_or(16),
    )
}

/// Refuse to run against streams made for another partition count: events
/// would be routed to partitions nobody reads, and a conversation's events
/// could be split over two owners.
pub fn check_partitions(
    stream: &str,
    created_for: Option<&str>,
    configured: u32,
) -> crate::Result<()> {
    // Streams from before the count was recorded were made with 16.
    let created_for = created_for.unwrap_or("16");
    crate::ensure_config!(
        created_for == configured.to_string(),
        "stream {stream} was created for {created_for} partitions, but this process is configured for {configured} (IM_PARTITIONS): run every process with IM_PARTITIONS={created_for}, or repartition as the README says (`imctl replay --into` a new data dir against a system started with the new count)"
    );
    Ok(())
}

mod consumers;
mod shards;
pub use consumers::*;
pub use shards::*;

#[cfg(test)]
mod tests;
