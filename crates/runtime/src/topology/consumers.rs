//! Partition consumers: names, filters, configuration, epochs, take-over.

use super::*;

pub fn durable_name(def: &ConsumerDef, partition: u32) -> String {
    def.durable.replace("{p}", &partition.to_string())
}

pub fn filter_subject(def: &ConsumerDef, partition: u32) -> String {
    def.filter.replace("{p}", &partition.to_string())
}

pub fn consumer_config(def: &ConsumerDef, partition: u32) -> consumer::pull::Config {
    let defaults = &topology().consumer_defaults;
    consumer::pull::Config {
        durable_name: Some(durable_name(def, partition)),
        filter_subject: filter_subject(def, partition),
        ack_policy: if def.ack_all {
            consumer::AckPolicy::All
        } else {
            consumer::AckPolicy::Explicit
        },
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

/// The epoch a consumer's name carries if it is a version of `base`
/// (`Some(0)` for `base` itself, as older releases and
/// [`migrate_predecessors`] name them), else None.
pub fn version_of(base: &str, name: &str) -> Option<u64> {
    if name == base {
        return Some(0);
    }
    name.strip_prefix(base)?.strip_prefix("-e")?.parse().ok()
}

/// The epoch of a consumer of this partition (`Some(0)` for the unversioned
/// name), or None if the name is another partition's.
pub fn consumer_epoch(def: &ConsumerDef, partition: u32, name: &str) -> Option<u64> {
    version_of(&durable_name(def, partition), name)
}

/// Whether `name` is one of the consumers of an earlier release that
/// partition `partition` of `def` takes the place of.
pub fn is_predecessor(def: &ConsumerDef, partition: u32, name: &str) -> bool {
    def.predecessors.iter().any(|predecessor| {
        version_of(&predecessor.replace("{p}", &partition.to_string()), name).is_some()
    })
}

/// Hand the places of earlier releases' consumers to the consumers of this
/// one, before any partition is taken over: for every partition of every
/// consumer with predecessors, the unversioned consumer of this release
/// (epoch 0, older than any owner's) is created right after the
/// predecessors' highest ack floor; only when every successor exists are
/// the predecessors deleted. Several consumers may share a predecessor
/// (ingest's partition 0 of an earlier release read both the unkeyed
/// events, now ingest's, and partition 0's keyed ones, now dedupe's), so
/// none is deleted before every successor took its floor. Idempotent and
/// safe to run from several processes at once: they compute the same
/// floors (the earlier release has stopped) and JetStream creates a
/// consumer with a given name and configuration once.
pub async fn migrate_predecessors(js: &jetstream::Context) -> Result<(), TakeOverError> {
    let mut retire: Vec<(String, String)> = Vec::new();
    for def in topology()
        .consumers
        .iter()
        .filter(|d| !d.predecessors.is_empty())
    {
        for partition in 0..topology().partition_count(def) {
            let stream_name = stream_for(&def.stream, partition);
            let stream = match js.get_stream(&stream_name).await {
                Ok(stream) => stream,
                // Not made yet: a new deployment has no predecessors.
                Err(_) => continue,
            };
            let names = consumer_names(&stream).await?;
            let mut floor = 0;
            let mut found = false;
            for name in names.iter().filter(|n| is_predecessor(def, partition, n)) {
                match stream.consumer_info(name).await {
                    Ok(info) => {
                        floor = floor.max(info.ack_floor.stream_sequence);
                        found = true;
                        retire.push((stream_name.clone(), name.clone()));
                    }
                    Err(error)
                        if error.kind()
                            == jetstream::context::ConsumerInfoErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(unavailable(format!(
                            "consumer {name} of {stream_name} did not answer ({error}); its successor needs its ack floor"
                        )))
                    }
                }
            }
            let successor = durable_name(def, partition);
            if !found || names.contains(&successor) {
                continue;
            }
            let mut config = consumer_config(def, partition);
            if let Some(start_sequence) = start_after(&[PartitionConsumer {
                name: String::new(),
                epoch: 0,
                ack_floor: floor,
            }]) {
                config.deliver_policy = consumer::DeliverPolicy::ByStartSequence { start_sequence };
            }
            if let Err(error) = stream.create_consumer(config).await {
                // Made meanwhile by another process (the same floor).
                if !consumer_names(&stream).await?.contains(&successor) {
                    return Err(unavailable(format!(
                        "create consumer {successor} of {stream_name}: {error}"
                    )));
                }
            }
            tracing::info!(
                consumer = successor,
                stream = stream_name,
                after = floor,
                "an earlier release's consumer hands its place over"
            );
        }
    }
    retire.sort();
    retire.dedup();
    for (stream_name, name) in retire {
        let Ok(stream) = js.get_stream(&stream_name).await else {
            continue;
        };
        match stream.delete_consumer(&name).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                return Err(unavailable(format!(
                    "delete the earlier release's consumer {name}: {error}"
                )))
            }
        }
    }
    Ok(())
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

pub(super) fn unavailable(what: impl std::fmt::Display) -> TakeOverError {
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

pub(super) fn is_not_found(error: &jetstream::stream::ConsumerError) -> bool {
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
pub async fn consumer_names(
    stream: &jetstream::stream::Stream,
) -> Result<Vec<String>, TakeOverError> {
    use futures::TryStreamExt;
    stream
        .consumer_names()
        .try_collect()
        .await
        .map_err(|error| unavailable(format!("consumer names: {error}")))
}
