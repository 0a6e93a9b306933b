//! The operator's webhook: an HTTPS POST of the notice as JSON, signed by
//! the Standard Webhooks scheme (standardwebhooks.com), so a receiver can
//! verify it with an off-the-shelf library.
//!
//! Headers: `webhook-id` (the notification id: stable, a resend after a
//! crash carries the same one, so receivers drop repeats), `webhook-timestamp`
//! (unix seconds) and `webhook-signature`
//! (`v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`). The key is
//! `IM_WEBHOOK_SECRET`: a `whsec_<base64>` secret as Standard Webhooks
//! libraries make them, its bytes after base64 decoding; any other text, its
//! UTF-8 bytes. The URL is the operator's configuration, never the
//! device's: a device registers only an opaque token.

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::{answer, classify, execute, Notice, Provider, SendOutcome};

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: String,
}

pub struct Webhook {
    config: WebhookConfig,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(config: WebhookConfig) -> Self {
        Webhook {
            config,
            client: super::http_client(false),
        }
    }

    async fn attempt(&self, notice: &Notice) -> SendOutcome {
        let body = match serde_json::to_vec(notice) {
            Ok(body) => body,
            Err(error) => return SendOutcome::Failed(format!("notice not serializable: {error}")),
        };
        let timestamp = super::unix_now();
        let request = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                signature(
                    &self.config.secret,
                    &notice.notification_id,
                    timestamp,
                    &body,
                ),
            )
            .header(ID_HEADER, &notice.notification_id)
            .body(body);
        match execute(request).await {
            Ok((status, headers, body)) => outcome(status, &headers, &body),
            Err(outcome) => outcome,
        }
    }
}

impl Provider for Webhook {
    fn send<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.attempt(notice))
    }
}

fn key(secret: &str) -> ring::hmac::Key {
    use base64::Engine as _;
    let bytes = secret
        .strip_prefix("whsec_")
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes)
}

fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    content
}

/// `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine as _;
    let content = signed_content(id, &timestamp.to_string(), body);
    let tag = ring::hmac::sign(&key(secret), &content);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// Check a `webhook-signature` header as a receiver would (constant time;
/// the header may list several space-separated signatures, as during a
/// key rotation: one that verifies is enough).
pub fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    use base64::Engine as _;
    let content = signed_content(id, timestamp, body);
    header.split_whitespace().any(|signature| {
        signature
            .strip_prefix("v1,")
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
            })
            .is_some_and(|tag| ring::hmac::verify(&key(secret), &content, &tag).is_ok())
    })
}

/// 410 Gone means the receiver no longer knows the token.
pub fn outcome(status: StatusCode, headers: &HeaderMap, body: &str) -> SendOutcome {
    if status == StatusCode::GONE {
        SendOutcome::InvalidToken(answer(status, body))
    } else {
        classify(status, headers, body)
    }
}

#[cfg(test)]
mod tests;
