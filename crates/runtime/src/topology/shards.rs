//! Stream sharding: which stream holds a partition, shard names, leader
//! placement, the server's account mapping.

use super::*;

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
pub async fn pipeline_streams(js: &jetstream::Context) -> crate::Result<Vec<String>> {
    use futures::TryStreamExt;
    let existing: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|error| crate::nats_error!("list streams: {error}"))?;
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
pub async fn spread_leaders(js: &jetstream::Context, nodes: &[String]) -> crate::Result<usize> {
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
