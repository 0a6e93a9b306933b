//! Device push registrations, the one place both the WebSocket ops
//! (`register_push` / `unregister_push`) and the HTTP routes go through:
//! checked, then kept in the KV bucket `IM_PUSH_TOKENS` that the `offline`
//! function follows.

use im_events::push::{check_registration, PushRegistration};
use serde_json::{json, Value};

use crate::Gateway;

/// Why a registration failed: the caller's fault, or ours.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistrationError {
    Invalid(String),
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
        let registration = PushRegistration {
            provider: provider.to_string(),
            token: token.to_string(),
            registered_at: im_events::rfc3339_ms(chrono::Utc::now().timestamp_millis()),
        };
        let value = serde_json::to_vec(&registration).unwrap_or_default();
        self.push_tokens
            .put(crate::kv_key(user, device), value.into())
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
mod tests {
    use super::*;

    #[test]
    fn tokens_are_masked() {
        assert_eq!(mask("abcdefghijkl"), "…ghijkl");
        assert_eq!(mask("short"), "…");
    }
}
