//! Apple Push Notification service: HTTP/2 `POST /3/device/<token>` with
//! token-based authentication (an ES256 JWT signed with the team's `.p8`
//! key, reused for 50 minutes as Apple asks).

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{answer, classify, CachedToken, Notice, Provider, SendOutcome};

#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// `https://api.push.apple.com` (production) or
    /// `https://api.sandbox.push.apple.com`.
    pub url: String,
    /// The `.p8` signing key (PKCS#8 PEM, P-256).
    pub key_pem: String,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
}

pub struct Apns {
    config: ApnsConfig,
    key: jsonwebtoken::EncodingKey,
    client: reqwest::Client,
    jwt: CachedToken,
}

/// Apple accepts a provider token for an hour and asks that it be renewed
/// no more often than every 20 minutes.
const JWT_LIFETIME: Duration = Duration::from_secs(50 * 60);

impl Apns {
    pub fn new(config: ApnsConfig) -> im_runtime::Result<Self> {
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(config.key_pem.as_bytes()).map_err(|error| {
                im_runtime::config_error!("APNs key is not a P-256 PKCS#8 PEM key: {error}")
            })?;
        Ok(Apns {
            config,
            key,
            client: super::http_client(true),
            jwt: CachedToken::default(),
        })
    }

    fn sign(&self) -> Result<(String, Duration), String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.config.key_id.clone());
        let claims = json!({"iss": self.config.team_id, "iat": super::unix_now()});
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(|token| (token, JWT_LIFETIME))
            .map_err(|error| format!("signing the APNs JWT: {error}"))
    }

    async fn attempt(&self, notice: &Notice) -> SendOutcome {
        let jwt = match self.jwt.get(|| async { self.sign() }).await {
            Ok(jwt) => jwt,
            Err(error) => return SendOutcome::Failed(error),
        };
        let (path, headers, body) = request(notice, &self.config.topic);
        let mut builder = self
            .client
            .post(format!("{}{path}", self.config.url.trim_end_matches('/')))
            .bearer_auth(jwt)
            .json(&body);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        super::send_authorized(builder, &self.jwt, outcome).await
    }
}

impl Provider for Apns {
    fn send<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.attempt(notice))
    }
}

/// The request for one notice: path, APNs headers and JSON payload (pure).
pub fn request(notice: &Notice, topic: &str) -> (String, Vec<(&'static str, String)>, Value) {
    let expiration = super::unix_now() + 24 * 3600;
    let headers = vec![
        ("apns-topic", topic.to_string()),
        ("apns-push-type", "alert".to_string()),
        ("apns-priority", "10".to_string()),
        ("apns-id", notice.notification_id.clone()),
        // Newer notifications of a conversation replace older ones on the
        // device (and a resend after a crash collapses into the first).
        ("apns-collapse-id", collapse_id(&notice.conversation_id)),
        ("apns-expiration", expiration.to_string()),
    ];
    let body = json!({
        "aps": {
            "alert": {"title": notice.title, "body": notice.body},
            "badge": notice.badge,
            "sound": "default",
            "thread-id": notice.conversation_id,
        },
        "im": {
            "notification_id": notice.notification_id,
            "conversation_id": notice.conversation_id,
            "first_seq": notice.first_seq,
            "last_seq": notice.last_seq,
            "count": notice.count,
        },
    });
    (format!("/3/device/{}", notice.token), headers, body)
}

/// `apns-collapse-id` is at most 64 bytes.
pub fn collapse_id(conversation_id: &str) -> String {
    if conversation_id.len() <= 64 {
        conversation_id.to_string()
    } else {
        format!(
            "c:{:016x}",
            im_events::partition::fnv1a64(conversation_id.as_bytes())
        )
    }
}

/// APNs' answer: the outcome, and whether the provider token must be
/// re-signed first.
pub fn outcome(status: StatusCode, headers: &HeaderMap, body: &str) -> (SendOutcome, bool) {
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| value["reason"].as_str().map(str::to_string))
        .unwrap_or_default();
    let text = answer(status, body);
    match (status.as_u16(), reason.as_str()) {
        (410, _) | (400, "BadDeviceToken") | (400, "DeviceTokenNotForTopic") => {
            (SendOutcome::InvalidToken(text), false)
        }
        (403, "ExpiredProviderToken") | (403, "InvalidProviderToken") => (
            SendOutcome::Retry {
                after: None,
                answer: text,
            },
            true,
        ),
        _ => (classify(status, headers, body), false),
    }
}

#[cfg(test)]
mod tests;
