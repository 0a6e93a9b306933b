//! The access layer (seed 003): gateways register themselves — id, the URL
//! clients connect to, how many connections they hold, whether they are
//! draining — in the KV bucket `IM_GATEWAYS`, refreshed every few seconds
//! and expiring after [`REGISTRATION_TTL`]; every gateway follows the bucket
//! and answers `GET /v1/connect` with the one a client should use, by a
//! configurable strategy. A gateway that is draining or whose entry is older
//! than the TTL (it died) is never chosen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub const GATEWAYS_BUCKET: &str = "IM_GATEWAYS";
/// A registration not refreshed for this long is a dead gateway's.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(6);
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// How `GET /v1/connect` picks a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The live gateway holding the fewest connections.
    #[default]
    LeastConnections,
    /// The same gateway for the same user while the set of gateways holds
    /// (rendezvous hashing: a gateway joining or leaving moves only its
    /// share of users).
    ConsistentHash,
    /// Each in turn.
    RoundRobin,
    /// At random, in proportion to each gateway's weight.
    WeightedRandom,
}

impl Strategy {
    pub fn parse(text: &str) -> Option<Strategy> {
        match text {
            "least_connections" => Some(Strategy::LeastConnections),
            "consistent_hash" => Some(Strategy::ConsistentHash),
            "round_robin" => Some(Strategy::RoundRobin),
            "weighted_random" => Some(Strategy::WeightedRandom),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LeastConnections => "least_connections",
            Strategy::ConsistentHash => "consistent_hash",
            Strategy::RoundRobin => "round_robin",
            Strategy::WeightedRandom => "weighted_random",
        }
    }
}

/// What a gateway says about itself in the bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub id: String,
    /// Where clients open the WebSocket (`ws://host:port/v1/ws`).
    pub url: String,
    pub connections: u64,
    #[serde(default)]
    pub draining: bool,
    /// For `weighted_random` (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// The gateway a client should use (pure): among the registrations written
/// within the TTL (`written_ms` by id) and not draining. `turn` is the
/// round-robin counter, `random` a number in [0, 1).
/// The gateways that announced themselves within the TTL and are not
/// draining, by id.
pub fn live(registrations: &[(Registration, i64)], now_ms: i64) -> Vec<&Registration> {
    let mut live: Vec<&Registration> = registrations
        .iter()
        .filter(|(r, written)| {
            !r.draining && now_ms - written < REGISTRATION_TTL.as_millis() as i64
        })
        .map(|(r, _)| r)
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    live
}

pub fn choose<'a>(
    strategy: Strategy,
    registrations: &'a [(Registration, i64)],
    now_ms: i64,
    user: &str,
    turn: u64,
    random: f64,
) -> Option<&'a Registration> {
    let live = live(registrations, now_ms);
    if live.is_empty() {
        return None;
    }
    match strategy {
        Strategy::LeastConnections => live.into_iter().min_by_key(|r| r.connections),
        Strategy::ConsistentHash => live.into_iter().max_by_key(|r| {
            im_events::partition::fnv1a64(format!("{user}\u{0}{}", r.id).as_bytes())
        }),
        Strategy::RoundRobin => {
            let index = (turn % live.len() as u64) as usize;
            Some(live[index])
        }
        Strategy::WeightedRandom => {
            let total: u64 = live.iter().map(|r| u64::from(r.weight.max(1))).sum();
            let mut point = (random.clamp(0.0, 0.999_999) * total as f64) as u64;
            for registration in &live {
                let weight = u64::from(registration.weight.max(1));
                if point < weight {
                    return Some(registration);
                }
                point -= weight;
            }
            live.last().copied()
        }
    }
}

/// This gateway's registration and its view of every other's.
pub struct Registry {
    bucket: kv::Store,
    pub strategy: Strategy,
    seen: Arc<Mutex<HashMap<String, (Registration, i64)>>>,
    turn: AtomicU64,
    /// Left the registry (a drained gateway): announcing stops.
    withdrawn: std::sync::atomic::AtomicBool,
}

impl Registry {
    pub async fn start(
        js: &jetstream::Context,
        strategy: Strategy,
    ) -> im_runtime::Result<Arc<Self>> {
        let bucket = im_runtime::lease::kv_bucket(
            js,
            GATEWAYS_BUCKET,
            "live gateways: id -> url, connections, draining",
            Some(REGISTRATION_TTL * 2),
        )
        .await?;
        let registry = Arc::new(Registry {
            bucket: bucket.clone(),
            strategy,
            seen: Arc::new(Mutex::new(HashMap::new())),
            turn: AtomicU64::new(0),
            withdrawn: std::sync::atomic::AtomicBool::new(false),
        });
        let seen = registry.seen.clone();
        tokio::spawn(async move {
            let Ok(mut watch) = bucket.watch_all_from_revision(1).await else {
                tracing::warn!(
                    "cannot follow the gateway registry; /v1/connect answers this gateway"
                );
                return;
            };
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { continue };
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                match entry.operation {
                    kv::Operation::Put => {
                        if let Ok(registration) =
                            serde_json::from_slice::<Registration>(&entry.value)
                        {
                            seen.insert(
                                entry.key.clone(),
                                (registration, entry.created.timestamp_millis()),
                            );
                        }
                    }
                    _ => {
                        seen.remove(&entry.key);
                    }
                }
            }
        });
        Ok(registry)
    }

    /// Write this gateway's registration now.
    pub async fn announce(&self, registration: &Registration) {
        if let Ok(value) = serde_json::to_vec(registration) {
            if let Err(error) = self.bucket.put(&registration.id, value.into()).await {
                tracing::info!(%error, "gateway registration not written; retrying");
            }
        }
    }

    /// Leave the registry for good (a drained gateway, at its end).
    pub async fn withdraw(&self, id: &str) {
        self.withdrawn.store(true, Ordering::Release);
        let _ = self.bucket.delete(id).await;
    }

    /// Keep announcing what `current` says, every [`REFRESH_EVERY`], until
    /// it has nothing to say (the gateway is gone) or the registration was
    /// withdrawn.
    pub async fn keep_announcing(
        self: Arc<Self>,
        current: impl Fn() -> Option<Registration> + Send,
    ) {
        loop {
            tokio::time::sleep(REFRESH_EVERY).await;
            if self.withdrawn.load(Ordering::Acquire) {
                return;
            }
            let Some(registration) = current() else {
                return;
            };
            self.announce(&registration).await;
        }
    }

    /// Every registration seen, with when it was written.
    pub fn registrations(&self) -> Vec<(Registration, i64)> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every live gateway: where a client can go when the one it asks is
    /// gone.
    pub fn live_gateways(&self) -> Vec<Registration> {
        let all = self.registrations();
        live(&all, chrono::Utc::now().timestamp_millis())
            .into_iter()
            .cloned()
            .collect()
    }

    /// The gateway `user` should use now.
    pub fn choose_for(&self, user: &str) -> Option<Registration> {
        let all = self.registrations();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let random = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
        choose(
            self.strategy,
            &all,
            chrono::Utc::now().timestamp_millis(),
            user,
            turn,
            random,
        )
        .cloned()
    }
}

#[cfg(test)]
mod tests;
