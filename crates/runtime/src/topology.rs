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

/// The streams a partitioned stage's partitions are spread over (1: the
/// stream of `schemas/streams.json` itself). `IM_STREAM_SHARDS`; every
/// process of a deployment must agree ([`ensure_streams`] refuses
/// otherwise).
pub fn stream_shards() -> u32 {
    static SHARDS: OnceLock<u32> = OnceLock::new();
    *SHARDS.get_or_init(|| {
        let Ok(text) = std::env::var("IM_STREAM_SHARDS") else {
            return 1;
        };
        match text.trim().parse::<u32>() {
            Ok(count) if (1..=MAX_SHARDS).contains(&count) => count,
            _ => {
                eprintln!(
                    "IM_STREAM_SHARDS={text:?} is not a shard count of 1..={MAX_SHARDS}; using 1"
                );
                1
            }
        }
    })
}

/// Most shards a stream may be split into.
pub const MAX_SHARDS: u32 = 16;

/// The stream metadata key that records how many shards a partitioned
/// stream was split into.
pub const SHARDS_METADATA: &str = "im.shards";

/// The name of shard `shard` of the partitioned stream `base`.
pub fn shard_name(base: &str, shard: u32) -> String {
    format!("{base}_S{shard}")
}

/// The stream `name` is a shard of (itself if it is none).
pub fn base_name(name: &str) -> &str {
    match name.rsplit_once("_S") {
        Some((base, shard)) if !shard.is_empty() && shard.bytes().all(|b| b.is_ascii_digit()) => {
            base
        }
        _ => name,
    }
}

/// The streams `def` is stored in with `shards` shards for `partitions`
/// partitions: itself unsharded (or when it is not partitioned), else one
/// per shard, shard `s` holding the partitions `p` with `p % shards == s`
/// (and shard 0 `shard_0_also`), each bounded by its share of the bytes.
pub fn shard_defs(def: &StreamDef, shards: u32, partitions: u32) -> Vec<StreamDef> {
    let Some(template) = def.partition_subjects.as_deref().filter(|_| shards > 1) else {
        return vec![def.clone()];
    };
    (0..shards)
        .map(|shard| {
            let mut subjects: Vec<String> = (0..partitions)
                .filter(|p| p % shards == shard)
                .map(|p| template.replace("{p}", &p.to_string()))
                .collect();
            if shard == 0 {
                subjects.extend(def.shard_0_also.iter().cloned());
            }
            StreamDef {
                name: shard_name(&def.name, shard),
                subjects,
                max_bytes: def.max_bytes.map(|bytes| bytes / i64::from(shards)),
                shards,
                // The account maps keyed subjects to their partition
                // (`nats_mappings`): a stream cannot pick its share itself.
                keyed: false,
                description: format!(
                    "{} (shard {shard} of {shards}: partitions p with p % {shards} == {shard})",
                    def.description
                ),
                ..def.clone()
            }
        })
        .collect()
}

/// The stream partition `partition` of `stream` (a name from
/// `schemas/streams.json`) is stored in, with this process's shards.
pub fn stream_for(stream: &str, partition: u32) -> String {
    stream_for_with(stream, partition, stream_shards())
}

pub fn stream_for_with(stream: &str, partition: u32, shards: u32) -> String {
    let sharded = shards > 1
        && topology()
            .streams
            .iter()
            .any(|def| def.name == stream && def.partition_subjects.is_some());
    if sharded {
        shard_name(stream, partition % shards)
    } else {
        stream.to_string()
    }
}

/// Every stream `stream` (a name from `schemas/streams.json`) is stored in.
pub fn stream_names(stream: &str) -> Vec<String> {
    match topology().streams.iter().find(|def| def.name == stream) {
        Some(def) => shard_defs(def, stream_shards(), topology().partitions.conversation)
            .into_iter()
            .map(|def| def.name)
            .collect(),
        None => vec![stream.to_string()],
    }
}

/// The pipeline's partitioned streams as they exist on this server, in
/// pipeline order (ingest, accepted, timeline, delivery), shards included,
/// whatever this process's own IM_STREAM_SHARDS says: for tools that watch
/// a running system.
pub async fn pipeline_streams(js: &jetstream::Context) -> anyhow::Result<Vec<String>> {
    use futures::TryStreamExt;
    let existing: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|error| anyhow::anyhow!("list streams: {error}"))?;
    Ok(partitioned_in(&existing))
}

/// Of `existing` stream names, the partitioned pipeline streams and their
/// shards, in pipeline order then shard order.
pub fn partitioned_in(existing: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for def in topology()
        .streams
        .iter()
        .filter(|def| def.partition_subjects.is_some())
    {
        let mut shards: Vec<(u32, &String)> = existing
            .iter()
            .filter_map(|name| {
                if *name == def.name {
                    return Some((0, name));
                }
                let shard = name.strip_prefix(&def.name)?.strip_prefix("_S")?;
                Some((shard.parse().ok()?, name))
            })
            .collect();
        shards.sort();
        found.extend(shards.into_iter().map(|(_, name)| name.clone()));
    }
    found
}

/// Ask JetStream to move the leaders of sharded streams so that shard `s`
/// of every stage is led by `nodes[s % len]`: the point of sharding is
/// that the stages' leaders, and their disk and CPU, sit on different
/// nodes, and JetStream alone may elect them all on one. Best effort (a
/// node may be down); returns how many leaders were asked to move.
pub async fn spread_leaders(js: &jetstream::Context, nodes: &[String]) -> anyhow::Result<usize> {
    if nodes.len() < 2 {
        return Ok(0);
    }
    let mut moved = 0;
    for name in pipeline_streams(js).await? {
        let Some(shard) = name
            .strip_prefix(base_name(&name))
            .and_then(|rest| rest.strip_prefix("_S"))
            .and_then(|shard| shard.parse::<usize>().ok())
        else {
            continue;
        };
        let wanted = &nodes[shard % nodes.len()];
        let Ok(mut stream) = js.get_stream(&name).await else {
            continue;
        };
        let Ok(info) = stream.info().await else {
            continue;
        };
        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        if leader.as_deref() == Some(wanted.as_str()) {
            continue;
        }
        let request = serde_json::json!({"placement": {"preferred": wanted}});
        let answer: Result<serde_json::Value, _> = js
            .request(format!("STREAM.LEADER.STEPDOWN.{name}"), &request)
            .await;
        if matches!(&answer, Ok(reply) if reply["success"] == true) {
            moved += 1;
        }
    }
    Ok(moved)
}

/// The account mapping a server needs when ingest is sharded: keyed
/// publishes go to their partition's subject before any stream sees them
/// (a stream's own transform cannot send a message to another stream).
/// Empty unsharded. For nats-server's configuration: `mappings = { … }`.
pub fn nats_mappings(shards: u32, partitions: u32) -> String {
    if shards <= 1 {
        return String::new();
    }
    let (source, destination) = im_events::subjects::keyed_ingest_transform(partitions);
    format!("mappings = {{\n  \"{source}\": \"{destination}\"\n}}\n")
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerDef {
    pub function: String,
    pub stream: String,
    pub durable: String,
    pub filter: String,
    pub partitioned_by: Option<String>,
    /// A second filter partition 0 reads (ingest: the unkeyed events).
    #[serde(default)]
    pub partition_0_also: Option<String>,
    /// The durable name releases before this consumer was partitioned used:
    /// such consumers (and their `-e<epoch>` forms) count as partition 0's
    /// oldest, so partition 0 starts after their ack floor and fences them.
    #[serde(default)]
    pub legacy_durable: Option<String>,
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
        topology
    })
}

/// Most partitions a stage may have: one process owns at most this many
/// partitions' publishers at once.
pub const MAX_PARTITIONS: u32 = crate::publish::MAX_CONCURRENT_PUBLISHERS as u32;

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
pub async fn ensure_streams(js: &jetstream::Context) -> anyhow::Result<()> {
    let bounds = stream_max_bytes_override().map_err(|e| anyhow::anyhow!(e))?;
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
) -> anyhow::Result<()> {
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
pub fn check_shards(stream: &str, existing: Option<u32>, configured: u32) -> anyhow::Result<()> {
    match existing {
        Some(existing) if existing != configured => anyhow::bail!(
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
) -> anyhow::Result<()> {
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
) -> anyhow::Result<()> {
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
                .map_err(|error| anyhow::anyhow!("update stream {}: {error}", def.name))?;
        }
        Err(_) => {
            if let Err(error) = js.create_stream(config.clone()).await {
                // Another process may have created it meanwhile.
                js.get_stream(&def.name)
                    .await
                    .map_err(|_| anyhow::anyhow!("create stream {}: {error}", def.name))?;
            }
        }
    }
    Ok(())
}

/// The partition count the pipeline's streams on this server were created
/// for, if they exist (streams from before the count was recorded: 16).
pub async fn existing_partitions(js: &jetstream::Context) -> Option<u32> {
    let accepted = im_events::subjects::STREAM_ACCEPTED;
    let mut stream = match js.get_stream(accepted).await {
        Ok(stream) => stream,
        Err(_) => js.get_stream(shard_name(accepted, 0)).await.ok()?,
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
) -> anyhow::Result<()> {
    // Streams from before the count was recorded were made with 16.
    let created_for = created_for.unwrap_or("16");
    anyhow::ensure!(
        created_for == configured.to_string(),
        "stream {stream} was created for {created_for} partitions, but this process is configured for {configured} (IM_PARTITIONS): run every process with IM_PARTITIONS={created_for}, or repartition as the README says (`imctl replay --into` a new data dir against a system started with the new count)"
    );
    Ok(())
}

pub fn durable_name(def: &ConsumerDef, partition: u32) -> String {
    def.durable.replace("{p}", &partition.to_string())
}

pub fn filter_subject(def: &ConsumerDef, partition: u32) -> String {
    def.filter.replace("{p}", &partition.to_string())
}

/// Every subject partition `partition` of `def` reads.
pub fn filter_subjects(def: &ConsumerDef, partition: u32) -> Vec<String> {
    let mut filters = vec![filter_subject(def, partition)];
    if partition == 0 {
        filters.extend(def.partition_0_also.clone());
    }
    filters
}

pub fn consumer_config(def: &ConsumerDef, partition: u32) -> consumer::pull::Config {
    let defaults = &topology().consumer_defaults;
    let mut filters = filter_subjects(def, partition);
    let (filter_subject, filter_subjects) = if filters.len() == 1 {
        (filters.remove(0), Vec::new())
    } else {
        (String::new(), filters)
    };
    consumer::pull::Config {
        durable_name: Some(durable_name(def, partition)),
        filter_subject,
        filter_subjects,
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: Duration::from_secs(defaults.ack_wait_secs),
        // Unlimited: the runtime counts attempts itself and dead-letters a
        // message it gives up on; JetStream's own limit would drop it silently.
        max_deliver: -1,
        max_ack_pending: defaults.max_ack_pending,
        ..Default::default()
    }
}

/// The durable consumer a claim of `epoch` reads through. Each owner has
/// its own (`unread-p5-e812`): an owner that was paused and lost its lease
/// cannot fetch, ack or nak through its successor's consumer (it would take
/// messages away from it, or put them back after the successor has handled
/// later ones: a conversation's events out of order). Its own is deleted when
/// the successor takes over, so its fetches fail.
pub fn epoch_durable_name(def: &ConsumerDef, partition: u32, epoch: u64) -> String {
    format!("{}-e{epoch}", durable_name(def, partition))
}

/// The epoch of a consumer of this partition (`Some(0)` for the unversioned
/// name older releases used), or None if the name is another partition's.
pub fn consumer_epoch(def: &ConsumerDef, partition: u32, name: &str) -> Option<u64> {
    let versions = |base: &str| -> Option<u64> {
        if name == base {
            return Some(0);
        }
        name.strip_prefix(base)?.strip_prefix("-e")?.parse().ok()
    };
    if let Some(epoch) = versions(&durable_name(def, partition)) {
        return Some(epoch);
    }
    // A release before the function was partitioned: older than any owner
    // of partition 0, whatever epoch its name carries.
    match &def.legacy_durable {
        Some(legacy) if partition == 0 => versions(legacy).map(|_| 0),
        _ => None,
    }
}

/// Why a take-over did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    /// A newer owner's consumer exists: the claim taking over is stale.
    #[error("superseded: consumer {0} belongs to a newer owner")]
    Superseded(String),
    /// JetStream could not say everything the take-over must know (a
    /// consumer's state, the consumer names) or do (create, delete): retry.
    #[error("{0}")]
    Unavailable(String),
}

fn unavailable(what: impl std::fmt::Display) -> TakeOverError {
    TakeOverError::Unavailable(what.to_string())
}

/// Take over a partition's consumer for a claim of `epoch`, so that it
/// delivers, in stream order, everything after the last message
/// acknowledged in order.
///
/// JetStream redelivers a dead owner's unacknowledged messages only after
/// `ack_wait`, while new messages flow at once: a restarted owner would see a
/// conversation's events out of order. Creating this owner's consumer at the
/// previous owners' ack floor puts the unacknowledged ones first again, and
/// deleting theirs fences them off (see [`epoch_durable_name`]). Messages
/// above the floor that were acked individually come again too; handlers are
/// idempotent. Fails with [`TakeOverError::Superseded`] if a newer owner's
/// consumer exists (this claim is stale), and with
/// [`TakeOverError::Unavailable`] whenever it cannot know every older
/// consumer of the partition: the floor and the fence must never rest on a
/// partial view (see [`partition_consumers`]).
pub async fn take_over_consumer(
    js: &jetstream::Context,
    def: &ConsumerDef,
    partition: u32,
    epoch: u64,
) -> Result<consumer::Consumer<consumer::pull::Config>, TakeOverError> {
    let stream_name = stream_for(&def.stream, partition);
    let stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|error| unavailable(format!("stream {stream_name} missing: {error}")))?;
    let name = epoch_durable_name(def, partition, epoch);
    let before = partition_consumers(&stream, def, partition).await?;
    if let Some(newer) = before.iter().find(|c| c.epoch > epoch) {
        return Err(TakeOverError::Superseded(newer.name.clone()));
    }
    let consumer = if before.iter().any(|c| c.epoch == epoch) {
        // Ours already (a retried take-over): keep its progress.
        stream
            .get_consumer(&name)
            .await
            .map_err(|error| unavailable(format!("open consumer {name}: {error}")))?
    } else {
        let mut config = consumer_config(def, partition);
        config.durable_name = Some(name.clone());
        if let Some(start_sequence) = start_after(&before) {
            config.deliver_policy = consumer::DeliverPolicy::ByStartSequence { start_sequence };
        }
        stream
            .create_consumer(config)
            .await
            .map_err(|error| unavailable(format!("create consumer {name}: {error}")))?
    };
    // Look again now that ours exists. Two claimants each list, then create:
    // the older one's consumer may appear after the newer one listed. Each
    // deletes what is older than its own after creating it, and the older
    // one, seeing the newer, deletes its own and gives up; so whichever
    // created last sees the other, and no consumer is left behind that
    // nobody reads (it would hold its messages pending forever).
    let after = partition_consumers(&stream, def, partition).await?;
    if after.iter().any(|c| c.epoch > epoch) {
        let _ = stream.delete_consumer(&name).await;
        return Err(TakeOverError::Superseded(name));
    }
    for older in after.iter().filter(|c| c.epoch < epoch) {
        match stream.delete_consumer(&older.name).await {
            Ok(_) => {}
            // Gone already (another claimant deleted it) is fine.
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                return Err(unavailable(format!(
                    "fence off consumer {}: {error}",
                    older.name
                )))
            }
        }
    }
    Ok(consumer)
}

fn is_not_found(error: &jetstream::stream::ConsumerError) -> bool {
    matches!(error.kind(), jetstream::stream::ConsumerErrorKind::JetStream(inner)
        if inner.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND)
}

/// Where a new owner's consumer starts: after the highest ack floor of the
/// older ones (everything up to it was handled: each consumer began where
/// the one before it had got to), or at the stream's start if there are
/// none or none acknowledged anything.
pub fn start_after(older: &[PartitionConsumer]) -> Option<u64> {
    let floor = older.iter().map(|c| c.ack_floor).max().unwrap_or(0);
    (floor > 0).then_some(floor + 1)
}

/// A consumer of one partition, as JetStream reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionConsumer {
    pub name: String,
    pub epoch: u64,
    /// The stream seq up to which it acknowledged everything.
    pub ack_floor: u64,
}

/// Every consumer of this partition, or an error: never a partial view.
///
/// JetStream's consumer *listing* (`CONSUMER.LIST`) collects each
/// consumer's state from its leader and, in a cluster, answers with whatever
/// arrived within 4 s (the server logs "Did not receive all consumer info
/// results"; the ones left out are named only in a `missing` field the
/// client drops). A take-over that trusted it computed its floor without an
/// older owner's consumer and never deleted it: that consumer kept ~200
/// messages pending forever (issue 11). Consumer *names* (`CONSUMER.NAMES`)
/// come from the meta leader's assignments, so they are complete or an
/// error; each of this partition's consumers is then asked for its own
/// state, and one that does not answer fails the take-over (it is retried).
pub async fn partition_consumers(
    stream: &jetstream::stream::Stream,
    def: &ConsumerDef,
    partition: u32,
) -> Result<Vec<PartitionConsumer>, TakeOverError> {
    let names = consumer_names(stream).await?;
    let mut found = Vec::new();
    for name in names {
        let Some(epoch) = consumer_epoch(def, partition, &name) else {
            continue;
        };
        match stream.consumer_info(&name).await {
            Ok(info) => found.push(PartitionConsumer {
                epoch,
                ack_floor: info.ack_floor.stream_sequence,
                name,
            }),
            // Deleted since the names were read: nothing to fence or wait for.
            Err(error) if error.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {}
            Err(error) => {
                return Err(unavailable(format!(
                    "consumer {name} of {} did not answer ({error}); a take-over needs every older consumer's ack floor",
                    stream.cached_info().config.name
                )))
            }
        }
    }
    Ok(found)
}

/// Every consumer name of a stream, from the meta layer, all pages.
async fn consumer_names(stream: &jetstream::stream::Stream) -> Result<Vec<String>, TakeOverError> {
    use futures::TryStreamExt;
    stream
        .consumer_names()
        .try_collect()
        .await
        .map_err(|error| unavailable(format!("consumer names: {error}")))
}

#[cfg(test)]
mod tests;
