//! Draining the input an earlier release fed a function through.
//!
//! Up to the release before this one, ingest wrote what it accepted to
//! `IM_ACCEPTED` and dedupe read it from there; now dedupe reads
//! `IM_INGEST` itself. What an earlier release's ingest accepted but its
//! dedupe had not applied when it stopped is still in `IM_ACCEPTED`, and
//! it comes before anything newer of its conversations in `IM_INGEST`.
//! So before a replica takes any partition, what the retired consumers
//! left unread is applied, by one replica at a time (a lease), partition
//! by partition of the earlier layout, through the same handler; then the
//! retired consumers are deleted, and every replica goes on. A deployment
//! with nothing left unread only deletes them.

use super::*;
use crate::topology::{
    consumer_names, partition_consumers, PartitionConsumer, RetiredInput, PARTITIONS_METADATA,
};

/// One partition of the earlier layout that still has consumers.
#[derive(Debug, Clone)]
pub struct RetiredPartition {
    pub def: ConsumerDef,
    pub partition: u32,
    pub consumers: Vec<PartitionConsumer>,
    /// Messages after the highest ack floor: what is left to apply.
    pub left: u64,
}

/// The retired input's streams on this server: the stream itself, or its
/// shards (`<stream>_S<s>`).
async fn retired_streams(js: &jetstream::Context, base: &str) -> Vec<jetstream::stream::Stream> {
    if let Ok(stream) = js.get_stream(base).await {
        return vec![stream];
    }
    let mut shards = Vec::new();
    while let Ok(stream) = js
        .get_stream(crate::topology::shard_name(base, shards.len() as u32))
        .await
    {
        shards.push(stream);
    }
    shards
}

/// Every partition of the retired input that still has a consumer, and how
/// much each has left.
pub async fn retired_partitions(
    js: &jetstream::Context,
    function: &str,
    retired: &RetiredInput,
) -> Result<Vec<RetiredPartition>, crate::topology::TakeOverError> {
    let mut streams = retired_streams(js, &retired.stream).await;
    let Some(first) = streams.first_mut() else {
        return Ok(Vec::new());
    };
    let partitions: u32 = first
        .info()
        .await
        .ok()
        .and_then(|info| info.config.metadata.get(PARTITIONS_METADATA).cloned())
        .and_then(|count| count.parse().ok())
        .unwrap_or(16);
    let shards = streams.len() as u32;
    let mut found = Vec::new();
    for partition in 0..partitions {
        let stream = &streams[(partition % shards) as usize];
        let def = ConsumerDef {
            function: function.to_string(),
            stream: stream.cached_info().config.name.clone(),
            durable: retired.durable.clone(),
            filter: retired.filter.clone(),
            partitioned_by: Some("conversation".into()),
            predecessors: Vec::new(),
            retired: None,
            ack_all: false,
            linger: Duration::ZERO,
            busy_linger: Duration::ZERO,
        };
        let consumers = partition_consumers(stream, &def, partition).await?;
        let Some(newest) = consumers.iter().max_by_key(|c| c.ack_floor) else {
            continue;
        };
        let left = match stream.consumer_info(&newest.name).await {
            Ok(info) => info.num_pending + info.num_ack_pending as u64,
            Err(error) => {
                return Err(crate::topology::TakeOverError::Unavailable(format!(
                    "retired consumer {} did not answer: {error}",
                    newest.name
                )))
            }
        };
        found.push(RetiredPartition {
            def,
            partition,
            consumers,
            left,
        });
    }
    Ok(found)
}

/// Apply what the retired consumers left unread, then delete them (see the
/// module's comment). Returns once none is left, or at shutdown.
pub async fn drain_retired<H: BatchHandler>(
    js: &jetstream::Context,
    def: &ConsumerDef,
    handler: &Arc<H>,
    instance: &str,
    lease_ttl: Duration,
    shutdown: &Shutdown,
) -> crate::Result<()> {
    let Some(retired) = def.retired.clone() else {
        return Ok(());
    };
    let mut announced = false;
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        let partitions = match retired_partitions(js, &def.function, &retired).await {
            Ok(partitions) => partitions,
            Err(error) => {
                tracing::warn!(%error, "cannot read the retired input; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if partitions.is_empty() {
            return Ok(());
        }
        if partitions.iter().all(|p| p.left == 0) {
            // Nothing left to apply: the earlier release's consumers go.
            for partition in &partitions {
                delete_consumers(js, partition).await;
            }
            continue;
        }
        if !announced {
            let left: u64 = partitions.iter().map(|p| p.left).sum();
            tracing::info!(
                left,
                stream = retired.stream,
                "applying what an earlier release accepted but did not apply, before anything newer"
            );
            announced = true;
        }
        // One replica applies it (a lease of its own); the others wait
        // for the retired consumers to be gone.
        let done = Shutdown::new();
        let watcher = {
            let (js, function, retired, done, shutdown) = (
                js.clone(),
                def.function.clone(),
                retired.clone(),
                done.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    if let Ok(left) = retired_partitions(&js, &function, &retired).await {
                        if left.is_empty() {
                            break;
                        }
                    }
                }
                done.trigger();
            })
        };
        let lease_name = format!("{}-retired", def.function);
        run_partitions(
            js,
            &lease_name,
            instance.to_string(),
            1,
            lease_ttl,
            done.clone(),
            |claim| {
                let (js, function, retired, handler, done) = (
                    js.clone(),
                    def.function.clone(),
                    retired.clone(),
                    handler.clone(),
                    done.clone(),
                );
                async move {
                    while claim.is_valid() && !done.is_triggered() {
                        match retired_partitions(&js, &function, &retired).await {
                            Ok(partitions) if partitions.is_empty() => break,
                            Ok(partitions) => {
                                for partition in partitions {
                                    if !claim.is_valid() || done.is_triggered() {
                                        break;
                                    }
                                    apply_retired(&js, &partition, &claim, &handler, &done).await;
                                }
                            }
                            Err(error) => {
                                tracing::warn!(%error, "cannot read the retired input; retrying");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                }
            },
        )
        .await?;
        let _ = watcher.await;
    }
}

async fn delete_consumers(js: &jetstream::Context, partition: &RetiredPartition) {
    let Ok(stream) = js.get_stream(&partition.def.stream).await else {
        return;
    };
    for consumer in &partition.consumers {
        if let Err(error) = stream.delete_consumer(&consumer.name).await {
            tracing::debug!(%error, consumer = consumer.name, "retired consumer not deleted");
        }
    }
}

/// Apply one retired partition's rest under `claim` (the drain's lease:
/// its epoch, newer than any earlier owner's, fences the store), then
/// delete its consumers.
async fn apply_retired<H: BatchHandler>(
    js: &jetstream::Context,
    partition: &RetiredPartition,
    claim: &Claim,
    handler: &Arc<H>,
    done: &Shutdown,
) {
    if partition.left == 0 {
        delete_consumers(js, partition).await;
        return;
    }
    let owner = Claim::unleased(&partition.def.function, partition.partition, claim.epoch);
    let mut consumer =
        match take_over_consumer(js, &partition.def, partition.partition, claim.epoch).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "retired partition not taken over; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                return;
            }
        };
    let mut held = Vec::new();
    let (mut last_progress, mut last_retry) = (Instant::now(), Instant::now());
    loop {
        if !claim.is_valid() || done.is_triggered() {
            return;
        }
        let fresh: Vec<jetstream::Message> = match consumer
            .fetch()
            .max_messages(topology().consumer_defaults.fetch_batch)
            .expires(Duration::from_secs(1))
            .messages()
            .await
        {
            Ok(messages) => messages.filter_map(|m| async { m.ok() }).collect().await,
            Err(error) => {
                tracing::warn!(%error, "fetch from the retired input failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let nothing_new = fresh.is_empty();
        let name = consumer.cached_info().name.clone();
        match handle_fetched(
            js,
            &partition.def,
            &owner,
            handler,
            done,
            &partition.def.function,
            fresh,
            &mut held,
            &mut last_progress,
            &mut last_retry,
            consumer.cached_info().config.ack_policy == jetstream::consumer::AckPolicy::All,
        )
        .await
        {
            Next::Continue => {}
            Next::Stop => return,
            Next::Rewind => {
                if rewind(&mut consumer, &owner, &mut held).await.is_err() {
                    return;
                }
            }
        }
        if nothing_new && held.is_empty() {
            let Ok(stream) = js.get_stream(&partition.def.stream).await else {
                continue;
            };
            match stream.consumer_info(&name).await {
                Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {
                    tracing::info!(
                        partition = partition.partition,
                        stream = partition.def.stream,
                        "retired partition applied"
                    );
                    let _ = stream.delete_consumer(&name).await;
                    // Any left over (deleted by the take-over already).
                    delete_consumers(js, partition).await;
                    return;
                }
                _ => {}
            }
        }
    }
}

/// The names of every consumer on the retired input's streams (for tests
/// and `imctl status`).
pub async fn retired_consumer_names(js: &jetstream::Context, base: &str) -> Vec<String> {
    let mut names = Vec::new();
    for stream in retired_streams(js, base).await {
        if let Ok(found) = consumer_names(&stream).await {
            names.extend(found);
        }
    }
    names
}
