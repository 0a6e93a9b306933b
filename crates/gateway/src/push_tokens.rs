//! Device push registrations, the one place both the WebSocket ops
//! (`register_push` / `unregister_push`) and the HTTP routes go through:
//! checked, then kept in the KV bucket `IM_PUSH_TOKENS` that the `offline`
//! function follows.

use futures::TryStreamExt;
use im_events::push::{check_registration, PushRegistration};
use serde_json::{json, Value};

use crate::Gateway;

/// Why a registration failed: the caller's fault, or ours.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistrationError {
    Invalid(String),
    /// The user has as many registrations as one may.
    Limit(String),
    Unavailable(String),
}

impl Gateway {
    /// Register (or replace) the push token of `user`'s `device`.
    pub async fn register_push(
        &self,
        user: &str,
        device: &str,
        provider: &str,
        token: &str,
    ) -> Result<Value, RegistrationError> {
        if !im_events::ids::is_valid_id(device) {
            return Err(RegistrationError::Invalid(format!(
                "device id {device:?} is not a valid id"
            )));
        }
        check_registration(provider, token).map_err(RegistrationError::Invalid)?;
        let key = crate::kv_key(user, device);
        let devices = self.push_devices(user).await?;
        let cap = self.config.max_push_devices;
        if !devices.contains(&key) && devices.len() >= cap {
            return Err(RegistrationError::Limit(format!(
                "{user} has push registrations for {} devices, the most one user may have ({cap}); unregister one first",
                devices.len()
            )));
        }
        let registration = PushRegistration {
            provider: provider.to_string(),
            token: token.to_string(),
            registered_at: im_events::rfc3339_ms(chrono::Utc::now().timestamp_millis()),
        };
        let value = serde_json::to_vec(&registration).unwrap_or_default();
        self.push_tokens
            .put(key, value.into())
            .await
            .map_err(|error| {
                RegistrationError::Unavailable(format!(
                    "push token not saved: {error}; register again"
                ))
            })?;
        Ok(
            json!({"user_id": user, "device_id": device, "provider": provider, "registered_at": registration.registered_at}),
        )
    }

    /// The keys of `user`'s devices with a live registration: the bucket's
    /// subjects under the user (one per device ever registered; the last
    /// value of a removed one is its delete marker).
    async fn push_devices(&self, user: &str) -> Result<Vec<String>, RegistrationError> {
        let unavailable = |error: String| {
            RegistrationError::Unavailable(format!(
                "push registrations not readable: {error}; register again"
            ))
        };
        let bucket = im_events::subjects::PUSH_TOKENS_BUCKET;
        let prefix = format!("$KV.{bucket}.");
        let stream = self
            .js
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let filter = format!("{prefix}{}.*", im_events::subjects::hex(user));
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(filter)
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .try_collect()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut live = Vec::new();
        for (subject, _) in subjects {
            let key = subject.trim_start_matches(&prefix).to_string();
            if self
                .push_tokens
                .get(&key)
                .await
                .map_err(|e| unavailable(e.to_string()))?
                .is_some()
            {
                live.push(key);
            }
        }
        Ok(live)
    }

    /// Forget the push token of `user`'s `device` (nothing to forget is fine).
    pub async fn unregister_push(&self, user: &str, device: &str) -> Result<(), RegistrationError> {
        if !im_events::ids::is_valid_id(device) {
            return Err(RegistrationError::Invalid(format!(
                "device id {device:?} is not a valid id"
            )));
        }
        self.push_tokens
            .delete(crate::kv_key(user, device))
            .await
            .map_err(|error| {
                RegistrationError::Unavailable(format!(
                    "push token not removed: {error}; try again"
                ))
            })
    }
}

/// A token as operators see it in the log: enough to tell tokens apart.
pub fn mask(token: &str) -> String {
    let count = token.chars().count();
    if count <= 8 {
        "…".to_string()
    } else {
        let tail: String = token.chars().skip(count - 6).collect();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests;
