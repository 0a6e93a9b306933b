//! Presence for clients: `presence` answers whether users are online and
//! when they were last seen; `presence_subscribe` also pushes a `presence`
//! frame when that changes. Online comes from a live view of the presence
//! bucket (a device is online while its gateway refreshes its entry, so a
//! dead gateway's devices go offline within the TTL by themselves);
//! `last_seen` from the `IM_LAST_SEEN` bucket, which each gateway writes
//! for its users with every refresh and when a user's last device leaves.
//! Only users who share a conversation with the requester may be asked
//! about; the check is the caller's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use im_runtime::presence::Presence;
use serde_json::{json, Value};

use crate::outbox::Outbox;

pub const LAST_SEEN_BUCKET: &str = "IM_LAST_SEEN";
/// How long a last-seen time is kept after it was written.
const LAST_SEEN_KEEP: Duration = Duration::from_secs(90 * 86_400);
/// How often subscribed users' presence is compared with what was pushed.
const CHECK_EVERY: Duration = Duration::from_millis(500);

pub struct PresenceHub {
    view: Arc<Mutex<Presence>>,
    ttl: Duration,
    last_seen: kv::Store,
    /// Watched user → connection id → its outbox.
    watchers: Mutex<HashMap<String, HashMap<u64, Outbox>>>,
    /// Connection → users it watches (to bound and to clean up).
    watching: Mutex<HashMap<u64, HashSet<String>>>,
    /// Watched user → online state last pushed.
    pushed: Mutex<HashMap<String, bool>>,
}

/// A user's presence entry as frames carry it (pure).
pub fn entry(user: &str, online: bool, last_seen_ms: Option<i64>) -> Value {
    json!({"user_id": user, "online": online,
           "last_seen": last_seen_ms.map(im_events::rfc3339_ms)})
}

impl PresenceHub {
    pub async fn start(js: &jetstream::Context, ttl: Duration) -> im_runtime::Result<Arc<Self>> {
        let view = im_runtime::presence::follow(js, ttl).await?;
        let last_seen = im_runtime::lease::kv_bucket(
            js,
            LAST_SEEN_BUCKET,
            "when each user was last online (unix ms)",
            Some(LAST_SEEN_KEEP),
        )
        .await?;
        let hub = Arc::new(PresenceHub {
            view,
            ttl,
            last_seen,
            watchers: Mutex::new(HashMap::new()),
            watching: Mutex::new(HashMap::new()),
            pushed: Mutex::new(HashMap::new()),
        });
        tokio::spawn(PresenceHub::run(Arc::downgrade(&hub)));
        Ok(hub)
    }

    fn online_now(&self, user: &str) -> (bool, Option<i64>) {
        let now = chrono::Utc::now().timestamp_millis();
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let online = view.is_online(user, now, self.ttl.as_millis() as i64);
        (online, view.last_refresh(user))
    }

    /// Users' presence entries, in the order asked.
    pub async fn lookup(&self, users: &[String]) -> Vec<Value> {
        let mut entries = Vec::with_capacity(users.len());
        for user in users {
            let (online, refreshed) = self.online_now(user);
            let stored = match self.last_seen.get(im_events::subjects::hex(user)).await {
                Ok(Some(value)) => String::from_utf8_lossy(&value).parse::<i64>().ok(),
                _ => None,
            };
            let last_seen = match (refreshed, stored) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            entries.push(entry(user, online, last_seen));
        }
        entries
    }

    /// Record that these users were online just now.
    pub async fn seen(&self, users: impl IntoIterator<Item = String>) {
        let now = chrono::Utc::now().timestamp_millis().to_string();
        for user in users {
            let _ = self
                .last_seen
                .put(im_events::subjects::hex(&user), now.clone().into())
                .await;
        }
    }

    /// Follow `users` for a connection, up to `limit` users per connection.
    /// Returns the users now followed, or how many would be too many.
    pub fn subscribe(
        &self,
        connection: u64,
        outbox: &Outbox,
        users: &[String],
        limit: usize,
    ) -> Result<(), usize> {
        let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        let followed = watching.entry(connection).or_default();
        let new: Vec<&String> = users.iter().filter(|u| !followed.contains(*u)).collect();
        if followed.len() + new.len() > limit {
            return Err(followed.len() + new.len());
        }
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        for user in new {
            followed.insert(user.clone());
            watchers
                .entry(user.clone())
                .or_default()
                .insert(connection, outbox.clone());
            pushed
                .entry(user.clone())
                .or_insert_with(|| self.online_now(user).0);
        }
        Ok(())
    }

    pub fn unsubscribe(&self, connection: u64, users: &[String]) {
        let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        let all: Vec<String> = match watching.get(&connection) {
            Some(followed) => users
                .iter()
                .filter(|u| followed.contains(*u))
                .cloned()
                .collect(),
            None => return,
        };
        for user in all {
            if let Some(followed) = watching.get_mut(&connection) {
                followed.remove(&user);
            }
            if let Some(subscribers) = watchers.get_mut(&user) {
                subscribers.remove(&connection);
                if subscribers.is_empty() {
                    watchers.remove(&user);
                    pushed.remove(&user);
                }
            }
        }
        if watching.get(&connection).is_some_and(HashSet::is_empty) {
            watching.remove(&connection);
        }
    }

    /// A connection closed: forget what it followed.
    pub fn drop_connection(&self, connection: u64) {
        let followed: Vec<String> = self
            .watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&connection)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        self.unsubscribe(connection, &followed);
    }

    /// Compare every followed user's presence with what was pushed, and
    /// push the changes (offline when a device's entry ages past the TTL:
    /// a SIGKILLed gateway never says goodbye).
    async fn run(hub: std::sync::Weak<Self>) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let Some(hub) = hub.upgrade() else { return };
            let followed: Vec<(String, bool)> = hub
                .pushed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(user, online)| (user.clone(), *online))
                .collect();
            let changed: Vec<String> = followed
                .into_iter()
                .filter(|(user, online)| hub.online_now(user).0 != *online)
                .map(|(user, _)| user)
                .collect();
            if changed.is_empty() {
                continue;
            }
            for frame in hub.lookup(&changed).await {
                let Some(user) = frame["user_id"].as_str() else {
                    continue;
                };
                let online = frame["online"].as_bool().unwrap_or(false);
                hub.pushed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(user.to_string(), online);
                let subscribers: Vec<Outbox> = hub
                    .watchers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(user)
                    .map(|s| s.values().cloned().collect())
                    .unwrap_or_default();
                let mut pushed = frame.clone();
                pushed["op"] = json!("presence");
                for outbox in subscribers {
                    let _ = outbox.push(&pushed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
