//! Who is online: a live view of the KV bucket `IM_PRESENCE`, where the
//! gateway keeps `user.device` entries refreshed while a device is connected.
//! `push` uses it to pick online users, `offline` to pick the devices that
//! are not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use im_events::subjects::{unhex, PRESENCE_BUCKET};

/// The presence view a publisher of frames follows, and how long after its
/// gateway's last refresh a device counts as online: where a user's frames
/// go (push, and dedupe's fast path).
#[derive(Clone)]
pub struct Online {
    pub view: Arc<Mutex<Presence>>,
    pub ttl: Duration,
}

impl Online {
    /// Whether any device of `user` is online.
    pub fn any(&self, user: &str, now_ms: i64) -> bool {
        !self.lock().gateways(user, now_ms, self.ttl_ms()).is_empty()
    }

    /// `frame` for `user`'s online devices, once for each gateway holding
    /// one (with the trace the push belongs to); false if none is online.
    pub fn add_frame(
        &self,
        out: &mut crate::publish::FramesOut,
        user: &str,
        now_ms: i64,
        frame: &bytes::Bytes,
        trace: Option<&im_events::Trace>,
    ) -> bool {
        let view = self.lock();
        let gateways = view.gateways(user, now_ms, self.ttl_ms());
        for gateway in &gateways {
            out.add(gateway, user, frame, trace);
        }
        !gateways.is_empty()
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Presence> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who is online, from the presence bucket: user → device → last refresh
/// and the gateway holding it.
#[derive(Debug, Default)]
pub struct Presence {
    devices: HashMap<String, HashMap<String, (i64, String)>>,
}

impl Presence {
    pub fn seen(&mut self, user: &str, device: &str, at_ms: i64, gateway: &str) {
        self.devices
            .entry(user.to_string())
            .or_default()
            .insert(device.to_string(), (at_ms, gateway.to_string()));
    }

    pub fn gone(&mut self, user: &str, device: &str) {
        if let Some(devices) = self.devices.get_mut(user) {
            devices.remove(device);
            if devices.is_empty() {
                self.devices.remove(user);
            }
        }
    }

    /// Forget devices that have not refreshed within `ttl_ms` (they are
    /// offline already: an expired entry leaves the bucket without a
    /// delete, so without this the view would keep every device ever
    /// seen). Returns how many were forgotten.
    pub fn sweep(&mut self, now_ms: i64, ttl_ms: i64) -> usize {
        let mut forgotten = 0;
        self.devices.retain(|_, devices| {
            let before = devices.len();
            devices.retain(|_, (at, _)| now_ms - *at <= ttl_ms);
            forgotten += before - devices.len();
            !devices.is_empty()
        });
        forgotten
    }

    /// Devices in the view.
    pub fn len(&self) -> usize {
        self.devices.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Online if any device refreshed within `ttl_ms` (expired entries
    /// vanish from the bucket without a delete, so age is checked here).
    pub fn is_online(&self, user: &str, now_ms: i64, ttl_ms: i64) -> bool {
        !self.gateways(user, now_ms, ttl_ms).is_empty()
    }

    /// The gateways holding a device of the user that refreshed within
    /// `ttl_ms`, each once.
    pub fn gateways(&self, user: &str, now_ms: i64, ttl_ms: i64) -> Vec<&str> {
        let mut gateways: Vec<&str> = Vec::new();
        for (at, gateway) in self.devices.get(user).into_iter().flat_map(|d| d.values()) {
            if now_ms - at <= ttl_ms && !gateways.contains(&gateway.as_str()) {
                gateways.push(gateway);
            }
        }
        gateways
    }

    /// The newest refresh of any of the user's devices still in the view.
    pub fn last_refresh(&self, user: &str) -> Option<i64> {
        self.devices
            .get(user)
            .and_then(|devices| devices.values().map(|(at, _)| *at).max())
    }

    /// One device of the user is connected (refreshed within `ttl_ms`).
    pub fn device_online(&self, user: &str, device: &str, now_ms: i64, ttl_ms: i64) -> bool {
        self.devices
            .get(user)
            .and_then(|devices| devices.get(device))
            .is_some_and(|(at, _)| now_ms - at <= ttl_ms)
    }
}

/// The value a gateway puts under a device's presence key.
pub fn presence_value(user: &str, device: &str, gateway: &str) -> String {
    serde_json::json!({"user": user, "device": device, "gateway": gateway}).to_string()
}

/// The gateway named in a presence value.
pub fn gateway_of(value: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| v["gateway"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Follow a bucket keyed `<hex user>.<hex device>` (presence, push
/// registrations) from its first revision, calling `apply` with the user,
/// the device and the entry for every change. `caught_up` is told once every
/// entry that existed when the watch began has been applied.
pub async fn watch_device_keys(
    bucket: kv::Store,
    mut apply: impl FnMut(&str, &str, &kv::Entry) + Send,
    mut caught_up: Option<tokio::sync::oneshot::Sender<()>>,
) -> crate::Result<()> {
    let empty = bucket
        .stream
        .get_info()
        .await
        .map(|info| info.state.messages == 0)
        .unwrap_or(false);
    let mut watch = bucket
        .watch_all_from_revision(1)
        .await
        .map_err(|error| crate::nats_error!("watch presence: {error}"))?;
    if empty {
        if let Some(signal) = caught_up.take() {
            let _ = signal.send(());
        }
    }
    while let Some(entry) = watch.next().await {
        let Ok(entry) = entry else { continue };
        let mut parts = entry.key.splitn(2, '.');
        if let (Some(user), Some(device)) =
            (parts.next().and_then(unhex), parts.next().and_then(unhex))
        {
            apply(&user, &device, &entry);
        }
        if entry.delta == 0 || entry.seen_current {
            if let Some(signal) = caught_up.take() {
                let _ = signal.send(());
            }
        }
    }
    Ok(())
}

/// How long a follower waits before watching a bucket again after its
/// watch failed or ended (a node restarting, a leader moving).
const REWATCH: crate::backoff::Backoff =
    crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// Keep `watch` (a [`watch_device_keys`] follower given the sender)
/// running in the background: when it fails or ends it is started again
/// (after [`REWATCH`]), from the bucket's first revision, for as long as
/// the process runs. Waits until the view holds the bucket's current
/// entries or `patience` has passed, and returns a flag that turns true
/// once it does (on the first attempt or a later one): whoever must not act
/// on an empty view (offline flushing to "no devices") looks at it.
pub async fn follow_until_current<W, F>(
    what: &str,
    patience: Duration,
    mut watch: W,
) -> Arc<std::sync::atomic::AtomicBool>
where
    W: FnMut(tokio::sync::oneshot::Sender<()>) -> F + Send + 'static,
    F: std::future::Future<Output = crate::Result<()>> + Send + 'static,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    let current = Arc::new(AtomicBool::new(false));
    let (caught_tx, mut caught_rx) = tokio::sync::watch::channel(false);
    let what_owned = what.to_string();
    let flag = current.clone();
    tokio::spawn(async move {
        let mut failures = 0u64;
        loop {
            let (signal, caught_up) = tokio::sync::oneshot::channel();
            let attempt = watch(signal);
            let (flag, caught_tx) = (flag.clone(), caught_tx.clone());
            let told = tokio::spawn(async move {
                let arrived = caught_up.await.is_ok();
                if arrived {
                    flag.store(true, Ordering::Release);
                    let _ = caught_tx.send(true);
                }
                arrived
            });
            let ended = attempt.await;
            // An attempt that caught up starts the backoff afresh.
            failures = if told.await.unwrap_or(false) {
                1
            } else {
                failures + 1
            };
            match ended {
                Err(error) => {
                    tracing::warn!(%error, what = %what_owned, "bucket watch failed; watching again")
                }
                Ok(()) => tracing::warn!(what = %what_owned, "bucket watch ended; watching again"),
            }
            tokio::time::sleep(REWATCH.delay(failures, &what_owned)).await;
        }
    });
    if tokio::time::timeout(patience, caught_rx.wait_for(|caught| *caught))
        .await
        .is_err()
    {
        tracing::warn!(
            what,
            ?patience,
            "bucket view not current yet; going on, watching on"
        );
    }
    current
}

/// Follow the presence bucket into `presence`.
pub async fn watch_presence(
    bucket: kv::Store,
    presence: Arc<Mutex<Presence>>,
    caught_up: Option<tokio::sync::oneshot::Sender<()>>,
) -> crate::Result<()> {
    watch_device_keys(
        bucket,
        move |user, device, entry| {
            let mut presence = presence.lock().unwrap_or_else(|p| p.into_inner());
            match entry.operation {
                kv::Operation::Put => presence.seen(
                    user,
                    device,
                    entry.created.timestamp_millis(),
                    &gateway_of(&entry.value),
                ),
                kv::Operation::Delete | kv::Operation::Purge => presence.gone(user, device),
            }
        },
        caught_up,
    )
    .await
}

/// The presence bucket (created with `ttl` if no process has yet).
pub async fn bucket(js: &jetstream::Context, ttl: Duration) -> crate::Result<kv::Store> {
    crate::lease::kv_bucket(
        js,
        PRESENCE_BUCKET,
        "online devices: user.device -> gateway",
        Some(ttl),
    )
    .await
}

/// A live view of presence, kept current in the background; returns once
/// it holds what the bucket held when it started.
pub async fn follow(js: &jetstream::Context, ttl: Duration) -> crate::Result<Arc<Mutex<Presence>>> {
    let bucket = bucket(js, ttl).await?;
    let presence = Arc::new(Mutex::new(Presence::default()));
    let view = presence.clone();
    follow_until_current("presence", Duration::from_secs(5), move |signal| {
        watch_presence(bucket.clone(), view.clone(), Some(signal))
    })
    .await;
    tokio::spawn(sweep_every(Arc::downgrade(&presence), ttl));
    Ok(presence)
}

/// Sweep the view every `ttl` while anyone holds it.
async fn sweep_every(presence: std::sync::Weak<Mutex<Presence>>, ttl: Duration) {
    let ttl_ms = ttl.as_millis() as i64;
    loop {
        tokio::time::sleep(ttl.max(Duration::from_secs(1))).await;
        let Some(presence) = presence.upgrade() else {
            return;
        };
        let mut view = presence.lock().unwrap_or_else(|p| p.into_inner());
        view.sweep(chrono::Utc::now().timestamp_millis(), ttl_ms);
        metrics::gauge!("im_presence_devices").set(view.len() as f64);
    }
}

#[cfg(test)]
mod tests;
