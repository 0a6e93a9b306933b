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
    /// Set once the partition's worker has stopped: a lease being handed
    /// over is released only then.
    stopped: Arc<AtomicBool>,
}

impl Claim {
    /// A claim that needs no lease (unpartitioned functions, tests).
    pub fn unleased(function: &str, partition: u32, epoch: u64) -> Self {
        Claim {
            function: function.to_string(),
            partition,
            epoch,
            valid: Arc::new(AtomicBool::new(true)),
            stopped: Arc::new(AtomicBool::new(false)),
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

pub async fn lease_bucket(js: &jetstream::Context, ttl: Duration) -> crate::Result<kv::Store> {
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
) -> crate::Result<kv::Store> {
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
            .map_err(|_| crate::nats_error!("create KV bucket {name}: {error}")),
    }
}

/// What a round does to one partition's lease.
#[derive(Clone, Copy)]
enum Step {
    Create,
    Renew(u64),
    Release(u64),
}

/// What came of a [`Step`].
enum Written {
    Created(Option<u64>),
    Renewed(Result<u64, kv::UpdateError>),
    Released,
}

struct Held {
    claim: Claim,
    revision: u64,
    /// When the lease was last written: it is ours until `ttl` after that.
    renewed: std::time::Instant,
    /// Being handed over to the replica the assignment gives it: the
    /// worker was told to stop; the lease goes once it has.
    handing_over: bool,
}

/// Which replica owns each of `partitions`: every replica that sees the
/// same live set computes the same answer. Balanced — with k replicas each
/// owns ⌊P/k⌋ or ⌈P/k⌉ — and stable: each partition goes to the replica
/// that ranks highest for it (rendezvous hashing) among those with room
/// left, so a join or a leave moves few partitions.
pub fn assignment(function: &str, partitions: &[u32], members: &[String]) -> HashMap<u32, String> {
    let mut members: Vec<&String> = members.iter().collect();
    members.sort();
    members.dedup();
    let mut owners = HashMap::new();
    if members.is_empty() {
        return owners;
    }
    let (base, extra) = (
        partitions.len() / members.len(),
        partitions.len() % members.len(),
    );
    let mut room: Vec<usize> = (0..members.len())
        .map(|i| base + usize::from(i < extra))
        .collect();
    for partition in partitions {
        let mut ranked: Vec<(u64, usize)> = members
            .iter()
            .enumerate()
            .map(|(i, member)| {
                let key = format!("{function}/{partition}/{member}");
                (im_events::partition::fnv1a64(key.as_bytes()), i)
            })
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(&(_, chosen)) = ranked.iter().find(|(_, i)| room[*i] > 0) {
            room[chosen] -= 1;
            owners.insert(*partition, members[chosen].clone());
        }
    }
    owners
}

fn member_key(function: &str, owner: &str) -> String {
    format!("members.{function}.{owner}")
}

/// The replicas of `function` seen alive (their member entry written within
/// the TTL), followed through a watch on the lease bucket. `None` until the
/// watch has started, or if it fails: then every replica competes for every
/// partition, as before replicas shared.
#[derive(Clone, Default)]
struct Members {
    seen: Arc<std::sync::Mutex<Option<HashMap<String, i64>>>>,
}

impl Members {
    fn follow(bucket: kv::Store, function: String, shutdown: crate::Shutdown) -> Members {
        use futures::StreamExt;
        let members = Members::default();
        let seen = members.seen.clone();
        tokio::spawn(async move {
            let prefix = format!("members.{function}.");
            let mut watch = match bucket.watch_with_history(format!("{prefix}*")).await {
                Ok(watch) => watch,
                Err(error) => {
                    tracing::warn!(%error, "cannot follow the other replicas; competing for every partition");
                    return;
                }
            };
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashMap::new());
            loop {
                let entry = tokio::select! {
                    entry = watch.next() => entry,
                    _ = shutdown.wait() => break,
                };
                let Some(Ok(entry)) = entry else {
                    tracing::warn!(
                        "the watch of the other replicas ended; competing for every partition"
                    );
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    break;
                };
                let Some(member) = entry.key.strip_prefix(&prefix) else {
                    continue;
                };
                let mut guard = seen.lock().unwrap_or_else(|p| p.into_inner());
                let map = guard.get_or_insert_with(HashMap::new);
                match entry.operation {
                    kv::Operation::Put => {
                        let written_ms = entry.created.timestamp_millis();
                        map.insert(member.to_string(), written_ms);
                    }
                    _ => {
                        map.remove(member);
                    }
                }
            }
        });
        members
    }

    /// Whether the watch has delivered this replica's own announcement:
    /// entries come in bucket order, so it has seen everyone before it.
    fn has_seen(&self, me: &str) -> bool {
        let guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().is_some_and(|map| map.contains_key(me))
    }

    /// The live replicas (written within `ttl`), this one included.
    fn live(&self, me: &str, ttl: Duration) -> Option<Vec<String>> {
        let now = chrono::Utc::now().timestamp_millis();
        let guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let map = guard.as_ref()?;
        let mut live: Vec<String> = map
            .iter()
            .filter(|(_, written)| now - **written < ttl.as_millis() as i64)
            .map(|(member, _)| member.clone())
            .collect();
        if !live.iter().any(|m| m == me) {
            live.push(me.to_string());
        }
        Some(live)
    }
}

/// Hand partitions over only once the set of live replicas has held still
/// for a TTL: a replica that misses one announcement (a starved machine)
/// must not send partitions back and forth. (Free partitions are taken at
/// once either way.)
struct Settling {
    ttl: Duration,
    last: Option<Vec<String>>,
    since: std::time::Instant,
}

impl Settling {
    fn new(ttl: Duration, now: std::time::Instant) -> Self {
        Settling {
            ttl,
            last: None,
            since: now,
        }
    }

    /// Whether the live set seen at `now` has been the same for a TTL.
    fn settled(&mut self, live: Option<&[String]>, now: std::time::Instant) -> bool {
        let live = live.map(|live| {
            let mut live = live.to_vec();
            live.sort();
            live
        });
        if live != self.last {
            self.last = live;
            self.since = now;
        }
        now.duration_since(self.since) >= self.ttl
    }
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
    let mut held: HashMap<u32, Held> = HashMap::new();
    let renew_every = ttl / 3;
    let members = Members::follow(bucket.clone(), function.clone(), shutdown.clone());
    let me = member_key(&function, &owner);
    // What `imctl status` shows of this replica.
    let announcement = serde_json::json!({
        "instance": owner,
        "pid": std::process::id(),
        "host": std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
    })
    .to_string();
    // Before the first round, see who else is there (briefly): otherwise a
    // replica starting beside others would take every free partition and
    // then hand most of them back.
    if bucket.put(&me, announcement.clone().into()).await.is_ok() {
        let deadline = std::time::Instant::now() + renew_every;
        while !members.has_seen(&owner) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut settling = Settling::new(ttl, std::time::Instant::now());
    loop {
        let round = std::time::Instant::now();
        // Who should own what, if the other replicas can be seen.
        let shares = members
            .live(&owner, ttl)
            .map(|live| (assignment(&function, &partitions, &live), live));
        let settled = settling.settled(shares.as_ref().map(|(_, live)| live.as_slice()), round);
        // Decide every partition's step first, then write them all at once:
        // a round costs one round trip to the bucket, not one per partition
        // (done one after another, 16 renewals under load took longer than
        // a short TTL, and leases expired before their turn came).
        let mut steps: Vec<(u32, Step)> = Vec::new();
        for partition in &partitions {
            let share = shares.as_ref().map(|(owners, live)| {
                let to = owners.get(partition).cloned().unwrap_or_default();
                let to_live = live.contains(&to);
                (to, to_live)
            });
            let mine = share.as_ref().is_none_or(|(to, _)| *to == owner);
            let Some(current) = held.get_mut(partition) else {
                // Another live replica's share is left to it.
                if mine {
                    steps.push((*partition, Step::Create));
                }
                continue;
            };
            if current.handing_over && current.claim.stopped.load(Ordering::Acquire) {
                // Drained: let the replica it belongs to take it now.
                steps.push((*partition, Step::Release(current.revision)));
                continue;
            }
            if !current.claim.is_valid() && !current.handing_over {
                held.remove(partition);
                continue;
            }
            if !mine && !current.handing_over && settled {
                if let Some((to, true)) = &share {
                    tracing::info!(partition, to = %to, "handing partition over: stopping after the batch in flight");
                    current.handing_over = true;
                    current.claim.revoke();
                }
            }
            steps.push((*partition, Step::Renew(current.revision)));
        }
        let writes = steps.iter().map(|(partition, step)| {
            let (bucket, key, value) = (
                bucket.clone(),
                format!("{function}.{partition}"),
                owner.clone(),
            );
            let step = *step;
            async move {
                // A write stuck longer than a round counts as not done.
                let limit = renew_every;
                match step {
                    Step::Create => Written::Created(
                        tokio::time::timeout(limit, bucket.create(&key, value.into()))
                            .await
                            .ok()
                            .and_then(Result::ok),
                    ),
                    Step::Release(revision) => {
                        let _ = tokio::time::timeout(
                            limit,
                            bucket.delete_expect_revision(&key, Some(revision)),
                        )
                        .await;
                        Written::Released
                    }
                    Step::Renew(revision) => Written::Renewed(
                        match tokio::time::timeout(
                            limit,
                            bucket.update(&key, value.into(), revision),
                        )
                        .await
                        {
                            Ok(result) => result,
                            Err(_) => Err(kv::UpdateError::new(kv::UpdateErrorKind::TimedOut)),
                        },
                    ),
                }
            }
        });
        let announce = async {
            if let Err(error) = bucket.put(&me, announcement.clone().into()).await {
                tracing::info!(%error, "could not announce this replica; retrying");
            }
        };
        let (written, ()) = futures::join!(futures::future::join_all(writes), announce);
        for ((partition, _), written) in steps.iter().zip(written) {
            let partition = *partition;
            match written {
                Written::Released => {
                    tracing::info!(partition, "handed partition over");
                    held.remove(&partition);
                    metrics::gauge!(crate::telemetry::OWNED_PARTITIONS, "function" => function.clone()).decrement(1.0);
                }
                Written::Renewed(result) => {
                    let Some(current) = held.get_mut(&partition) else {
                        continue;
                    };
                    match result {
                        Ok(revision) => {
                            current.revision = revision;
                            current.renewed = round;
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
                            held.remove(&partition);
                            metrics::gauge!(crate::telemetry::OWNED_PARTITIONS, "function" => function.clone()).decrement(1.0);
                        }
                    }
                }
                Written::Created(None) => {}
                Written::Created(Some(revision)) => {
                    let claim = Claim {
                        function: function.clone(),
                        partition,
                        epoch: revision,
                        valid: Arc::new(AtomicBool::new(true)),
                        stopped: Arc::new(AtomicBool::new(false)),
                    };
                    tracing::info!(partition, epoch = revision, "took partition lease");
                    metrics::gauge!(crate::telemetry::OWNED_PARTITIONS, "function" => function.clone())
                        .increment(1.0);
                    held.insert(
                        partition,
                        Held {
                            claim: claim.clone(),
                            revision,
                            renewed: round,
                            handing_over: false,
                        },
                    );
                    on_claim(claim);
                }
            }
        }
        // The next round a third of the TTL after this one began, however
        // long its writes took.
        let pause = renew_every.saturating_sub(round.elapsed());
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    // Leaving: the others take this replica's share at once.
    let _ = bucket.delete(&me).await;
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
) -> crate::Result<()>
where
    F: FnMut(Claim) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tracing::Instrument;
    let bucket = lease_bucket(js, lease_ttl).await?;
    // Owning partitions or standing by for them from here on.
    crate::telemetry::mark_started();
    // How many partitions the function has: an alert compares the owned
    // ones (summed over replicas) with it.
    metrics::gauge!(crate::telemetry::PARTITIONS, "function" => function.to_string())
        .set(f64::from(partitions));
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
                let stopped = claim.stopped.clone();
                let worker = work(claim);
                workers.spawn(async move {
                    worker.await;
                    stopped.store(true, Ordering::Release);
                }.instrument(span));
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
mod tests;
