//! The operator's webhook: an HTTPS POST of the notice as JSON, signed with
//! HMAC-SHA256 so the receiver can tell it came from us.
//!
//! Headers: `Im-Webhook-Timestamp` (unix seconds), `Im-Webhook-Signature`
//! (`sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`) and
//! `Im-Notification-Id` (stable: a resend after a crash carries the same id,
//! so receivers can drop repeats). The URL is the operator's configuration,
//! never the device's: a device registers only an opaque token.

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::{answer, classify, execute, Notice, Provider, SendOutcome};

pub const TIMESTAMP_HEADER: &str = "Im-Webhook-Timestamp";
pub const SIGNATURE_HEADER: &str = "Im-Webhook-Signature";
pub const ID_HEADER: &str = "Im-Notification-Id";

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
                signature(&self.config.secret, timestamp, &body),
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

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Check a signature as a receiver would (constant time).
pub fn verify(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = timestamp.as_bytes().to_vec();
    message.push(b'.');
    message.extend_from_slice(body);
    ring::hmac::verify(&key, &message, &tag).is_ok()
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
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_does_not() {
        let body = br#"{"a":1}"#;
        let signed = signature("s3cret", 1_700_000_000, body);
        assert!(signed.starts_with("sha256="));
        assert_eq!(signed.len(), "sha256=".len() + 64);
        assert!(verify("s3cret", "1700000000", body, &signed));
        assert!(!verify("other", "1700000000", body, &signed));
        assert!(!verify("s3cret", "1700000001", body, &signed));
        assert!(!verify("s3cret", "1700000000", br#"{"a":2}"#, &signed));
        assert!(!verify("s3cret", "1700000000", body, "sha256=zz"));
    }

    #[test]
    fn gone_removes_the_token() {
        assert!(matches!(
            outcome(StatusCode::GONE, &HeaderMap::new(), ""),
            SendOutcome::InvalidToken(_)
        ));
        assert!(matches!(
            outcome(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), ""),
            SendOutcome::Retry { .. }
        ));
    }
}
