//! Partition ownership: one active owner per partition, with failover.
//!
//! A replica owns partition p while it holds key `<function>.<p>` in the KV
//! bucket `IM_LEASES`, whose entries expire after the lease TTL unless
//! renewed. The claim's epoch is the KV revision at which it was taken:
//! revisions only grow, so a later owner always has a higher epoch, and the
//! store fence refuses writes from a lower one. A paused owner that wakes up
//! after its lease moved is therefore harmless even before it notices.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use im_events::subjects::LEASE_BUCKET;

#[derive(Clone, Debug)]
pub struct Claim {
    pub function: String,
    pub partition: u32,
    pub epoch: u64,
    valid: Arc<AtomicBool>,
}

impl Claim {
    /// A claim that needs no lease (unpartitioned functions, tests).
    pub fn unleased(function: &str, partition: u32, epoch: u64) -> Self {
        Claim {
            function: function.to_string(),
            partition,
            epoch,
            valid: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn is_valid(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }

    pub fn revoke(&self) {
        self.valid.store(false, Ordering::Release);
    }

    pub fn fence(&self) -> im_store::Fence {
        im_store::Fence {
            scope: self.function.clone(),
            partition: self.partition,
            epoch: self.epoch,
        }
    }
}

pub async fn lease_bucket(js: &jetstream::Context, ttl: Duration) -> anyhow::Result<kv::Store> {
    kv_bucket(
        js,
        LEASE_BUCKET,
        "partition leases of the pipeline's functions",
        Some(ttl),
    )
    .await
}

/// Open a KV bucket, creating it (one value per key; entries expire after
/// `ttl` unless rewritten) if no process has yet.
pub async fn kv_bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    ttl: Option<Duration>,
) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: name.to_string(),
        description: description.to_string(),
        history: 1,
        max_age: ttl.unwrap_or_default(),
        num_replicas: crate::topology::stream_replicas(),
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(error) => js
            .get_key_value(name)
            .await
            .map_err(|_| anyhow::anyhow!("create KV bucket {name}: {error}")),
    }
}

struct Held {
    claim: Claim,
    revision: u64,
    /// When the lease was last written: it is ours until `ttl` after that.
    renewed: std::time::Instant,
}

/// Whether a failed renewal leaves the lease ours: yes if the write did not
/// reach the bucket (a timeout, no stream leader) and a margin of the TTL
/// is left since the last renewal; no if the revision moved on (another
/// owner, or the entry expired) or the lease may already have expired.
fn keep_through(error: &kv::UpdateError, since_renewal: Duration, ttl: Duration) -> bool {
    let transient = !matches!(error.kind(), kv::UpdateErrorKind::WrongLastRevision);
    transient && since_renewal + ttl / 3 < ttl
}

/// Keeps trying to own every partition in `partitions`; calls `on_claim` for
/// each one won, renews them, revokes lost ones. Returns at shutdown after
/// releasing what it holds, so another replica takes over at once.
pub async fn manage_leases<F>(
    bucket: kv::Store,
    function: String,
    owner: String,
    partitions: Vec<u32>,
    ttl: Duration,
    shutdown: crate::Shutdown,
    mut on_claim: F,
) -> Vec<(String, u64)>
where
    F: FnMut(Claim) + Send,
{
    let function_label = function.clone();
    let mut held: HashMap<u32, Held> = HashMap::new();
    let renew_every = ttl / 3;
    loop {
        for partition in &partitions {
            let key = format!("{function}.{partition}");
            if let Some(current) = held.get_mut(partition) {
                if !current.claim.is_valid() {
                    held.remove(partition);
                    continue;
                }
                let attempted = std::time::Instant::now();
                match bucket
                    .update(&key, owner.clone().into(), current.revision)
                    .await
                {
                    Ok(revision) => {
                        current.revision = revision;
                        current.renewed = attempted;
                    }
                    Err(error) if keep_through(&error, current.renewed.elapsed(), ttl) => {
                        // The bucket is unreachable for a moment (its stream
                        // is electing a leader): nobody else can take the
                        // lease meanwhile, so keep working and try again.
                        tracing::info!(partition, %error, "lease not renewed, still ours; retrying");
                    }
                    Err(error) => {
                        tracing::warn!(partition, %error, "lost partition lease");
                        current.claim.revoke();
                        held.remove(partition);
                        metrics::gauge!(crate::telemetry::OWNED_PARTITIONS, "function" => function.clone()).decrement(1.0);
                    }
                }
            } else if let Ok(revision) = bucket.create(&key, owner.clone().into()).await {
                let claim = Claim {
                    function: function.clone(),
                    partition: *partition,
                    epoch: revision,
                    valid: Arc::new(AtomicBool::new(true)),
                };
                tracing::info!(partition, epoch = revision, "took partition lease");
                metrics::gauge!(crate::telemetry::OWNED_PARTITIONS, "function" => function.clone())
                    .increment(1.0);
                held.insert(
                    *partition,
                    Held {
                        claim: claim.clone(),
                        revision,
                        renewed: std::time::Instant::now(),
                    },
                );
                on_claim(claim);
            }
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(renew_every) => {}
        }
    }
    let _ = function_label;
    held.into_iter()
        .map(|(partition, current)| {
            current.claim.revoke();
            (format!("{function}.{partition}"), current.revision)
        })
        .collect()
}

/// Give up leases so that another replica takes over without waiting for
/// them to expire.
pub async fn release(bucket: &kv::Store, held: Vec<(String, u64)>) {
    for (key, revision) in held {
        let _ = bucket.delete_expect_revision(&key, Some(revision)).await;
    }
}

/// Own as many of `partitions` as this replica can win, running `work` for
/// each claim won, until `shutdown`; then wait for the workers (each stops
/// when its claim is revoked or at shutdown) and release the leases.
pub async fn run_partitions<F, Fut>(
    js: &jetstream::Context,
    function: &str,
    instance: String,
    partitions: u32,
    lease_ttl: Duration,
    shutdown: crate::Shutdown,
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut(Claim) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tracing::Instrument;
    let bucket = lease_bucket(js, lease_ttl).await?;
    let (claims_tx, mut claims_rx) = tokio::sync::mpsc::unbounded_channel::<Claim>();
    let manager = tokio::spawn(manage_leases(
        bucket.clone(),
        function.to_string(),
        instance,
        (0..partitions).collect(),
        lease_ttl,
        shutdown.clone(),
        move |claim| {
            let _ = claims_tx.send(claim);
        },
    ));
    let mut workers = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            claim = claims_rx.recv() => {
                let Some(claim) = claim else { break };
                let span = tracing::info_span!("partition", function, partition = claim.partition, epoch = claim.epoch);
                workers.spawn(work(claim).instrument(span));
            }
            Some(_) = workers.join_next(), if !workers.is_empty() => {}
            _ = shutdown.wait() => break,
        }
    }
    while workers.join_next().await.is_some() {}
    let held = manager.await.unwrap_or_default();
    release(&bucket, held).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_that_did_not_reach_the_bucket_keeps_the_lease_for_a_while() {
        let ttl = Duration::from_secs(6);
        let timed_out = kv::UpdateError::new(kv::UpdateErrorKind::TimedOut);
        let moved_on = kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision);
        assert!(keep_through(&timed_out, Duration::from_secs(2), ttl));
        assert!(!keep_through(&timed_out, Duration::from_secs(4), ttl));
        assert!(!keep_through(&moved_on, Duration::from_secs(1), ttl));
    }
}
