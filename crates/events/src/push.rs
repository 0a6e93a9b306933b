//! Device push registrations: which provider reaches a device, and with what
//! token. The gateway writes them to the KV bucket `IM_PUSH_TOKENS` (key
//! `user.device`, hex-encoded like presence); the `offline` function reads
//! them, and removes a token its provider reported invalid.

use serde::{Deserialize, Serialize};

/// The push providers a device may register with: Apple, Google (FCM),
/// Huawei (HMS Push Kit), Xiaomi, or the operator's webhook.
pub const PROVIDERS: [&str; 5] = ["apns", "fcm", "hms", "xiaomi", "webhook"];

pub const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRegistration {
    pub provider: String,
    pub token: String,
    /// RFC 3339.
    pub registered_at: String,
}

/// Why a registration is refused, if it is.
pub fn check_registration(provider: &str, token: &str) -> Result<(), String> {
    if !PROVIDERS.contains(&provider) {
        return Err(format!(
            "unknown push provider {provider:?}; expected one of {}",
            PROVIDERS.join(", ")
        ));
    }
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(format!("push token must be 1-{MAX_TOKEN_BYTES} bytes"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("push token must be visible ASCII without spaces".into());
    }
    if provider == "apns" && !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("an APNs device token is hexadecimal".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
