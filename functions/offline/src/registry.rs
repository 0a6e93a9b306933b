//! Who can be notified how: a live view of the KV bucket `IM_PUSH_TOKENS`
//! (`user.device` → provider and token), which the gateway writes when a
//! device registers or unregisters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, kv};
use im_events::push::PushRegistration;
use im_events::subjects::PUSH_TOKENS_BUCKET;

use crate::DeviceToken;

/// user → device → (registration, KV revision).
#[derive(Debug, Default)]
pub struct Registry {
    users: HashMap<String, HashMap<String, (PushRegistration, u64)>>,
}

impl Registry {
    pub fn put(&mut self, user: &str, device: &str, registration: PushRegistration, revision: u64) {
        self.users
            .entry(user.to_string())
            .or_default()
            .insert(device.to_string(), (registration, revision));
    }

    /// Forget a device's registration, unless a newer one replaced it.
    pub fn remove(&mut self, user: &str, device: &str, revision: u64) {
        if let Some(devices) = self.users.get_mut(user) {
            if devices.get(device).is_some_and(|(_, r)| *r <= revision) {
                devices.remove(device);
            }
            if devices.is_empty() {
                self.users.remove(user);
            }
        }
    }

    /// The user's registered devices, by device id.
    pub fn devices(&self, user: &str) -> Vec<DeviceToken> {
        let mut devices: Vec<DeviceToken> = self
            .users
            .get(user)
            .into_iter()
            .flatten()
            .map(|(device, (registration, _))| DeviceToken {
                device_id: device.clone(),
                provider: registration.provider.clone(),
                token: registration.token.clone(),
            })
            .collect();
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        devices
    }

    /// The KV revision of the device's registration if it holds `token`.
    pub fn revision_holding(&self, user: &str, device: &str, token: &str) -> Option<u64> {
        let (registration, revision) = self.users.get(user)?.get(device)?;
        (registration.token == token).then_some(*revision)
    }
}

/// Open (or create) the registrations bucket; entries never expire.
pub async fn bucket(js: &jetstream::Context) -> im_runtime::Result<kv::Store> {
    im_runtime::lease::kv_bucket(
        js,
        PUSH_TOKENS_BUCKET,
        "device push registrations: user.device -> provider and token",
        None,
    )
    .await
}

/// Follow the bucket into `registry`.
pub async fn watch(
    bucket: kv::Store,
    registry: Arc<Mutex<Registry>>,
    caught_up: Option<tokio::sync::oneshot::Sender<()>>,
) -> im_runtime::Result<()> {
    im_runtime::presence::watch_device_keys(bucket, move |user, device, entry| {
        let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<PushRegistration>(&entry.value) {
                Ok(registration) => registry.put(user, device, registration, entry.revision),
                Err(error) => {
                    tracing::warn!(%error, key = %entry.key, "unreadable push registration ignored")
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                registry.remove(user, device, entry.revision)
            }
        }
    }, caught_up)
    .await
}

#[cfg(test)]
mod tests;
