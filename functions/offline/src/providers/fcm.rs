//! Firebase Cloud Messaging, HTTP v1 API: `POST
//! /v1/projects/<project>/messages:send` with an OAuth2 access token that a
//! service account obtains by signing an RS256 JWT assertion (RFC 7523).

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, classify, CachedToken, Notice, Provider, SendOutcome};

pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The fields of a Google service-account key file that FCM needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub private_key_id: String,
    pub private_key: String,
    pub client_email: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// `https://fcm.googleapis.com`.
    pub url: String,
    pub account: ServiceAccount,
}

pub struct Fcm {
    config: FcmConfig,
    key: jsonwebtoken::EncodingKey,
    client: reqwest::Client,
    token: CachedToken,
}

impl Fcm {
    pub fn new(config: FcmConfig) -> im_runtime::Result<Self> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(config.account.private_key.as_bytes())
            .map_err(|error| {
                im_runtime::config_error!(
                    "FCM service account private_key is not an RSA PEM key: {error}"
                )
            })?;
        Ok(Fcm {
            config,
            key,
            client: super::http_client(false),
            token: CachedToken::default(),
        })
    }

    /// The signed assertion exchanged for an access token.
    pub fn assertion(&self, now: i64) -> Result<String, String> {
        let account = &self.config.account;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(account.private_key_id.clone());
        let claims = json!({
            "iss": account.client_email, "scope": SCOPE, "aud": account.token_uri,
            "iat": now, "exp": now + 3600,
        });
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|error| format!("signing the FCM assertion: {error}"))
    }

    async fn access_token(&self) -> Result<String, String> {
        self.token
            .get(|| async {
                let assertion = self.assertion(super::unix_now())?;
                super::oauth_token(
                    &self.client,
                    &self.config.account.token_uri,
                    &[("grant_type", JWT_BEARER), ("assertion", &assertion)],
                )
                .await
            })
            .await
    }

    async fn attempt(&self, notice: &Notice) -> SendOutcome {
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(error) => return super::token_failure("FCM", error),
        };
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.config.url.trim_end_matches('/'),
            self.config.account.project_id
        );
        let request = self
            .client
            .post(url)
            .bearer_auth(token)
            .json(&message(notice));
        super::send_authorized(request, &self.token, outcome).await
    }
}

impl Provider for Fcm {
    fn send<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.attempt(notice))
    }
}

/// The v1 message for one notice (pure). Data values must be strings.
pub fn message(notice: &Notice) -> Value {
    json!({"message": {
        "token": notice.token,
        "notification": {"title": notice.title, "body": notice.body},
        "data": {
            "notification_id": notice.notification_id,
            "conversation_id": notice.conversation_id,
            "first_seq": notice.first_seq.to_string(),
            "last_seq": notice.last_seq.to_string(),
            "count": notice.count.to_string(),
            "badge": notice.badge.to_string(),
        },
        "android": {
            "collapse_key": super::apns::collapse_id(&notice.conversation_id),
            "notification": {"tag": notice.conversation_id, "notification_count": notice.badge},
        },
        "apns": {
            "headers": {"apns-collapse-id": super::apns::collapse_id(&notice.conversation_id)},
            "payload": {"aps": {"badge": notice.badge}},
        },
    }})
}

/// FCM's answer: the outcome, and whether the access token must be renewed.
pub fn outcome(status: StatusCode, headers: &HeaderMap, body: &str) -> (SendOutcome, bool) {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error_code = parsed["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|detail| detail["errorCode"].as_str())
        .unwrap_or_default()
        .to_string();
    let text = answer(status, body);
    if error_code == "UNREGISTERED" || status == StatusCode::NOT_FOUND {
        return (SendOutcome::InvalidToken(text), false);
    }
    if status == StatusCode::UNAUTHORIZED {
        return (
            SendOutcome::Retry {
                after: None,
                answer: text,
            },
            true,
        );
    }
    (classify(status, headers, body), false)
}

/// How long FCM access tokens are assumed to live when not said.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests;
