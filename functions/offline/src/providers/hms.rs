//! Huawei Push Kit (HMS), the channel Huawei and Honor phones without Google
//! services use: an app-level OAuth2 access token (client credentials) and
//! `POST /v1/<app id>/messages:send`. Results come as a `code` in the JSON
//! body: `80000000` is success.

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{answer, classify, CachedToken, Notice, Provider, SendOutcome};

#[derive(Debug, Clone)]
pub struct HmsConfig {
    /// `https://push-api.cloud.huawei.com`.
    pub url: String,
    /// `https://oauth-login.cloud.huawei.com/oauth2/v3/token`.
    pub token_url: String,
    /// The app id, which is also the OAuth client id.
    pub app_id: String,
    pub client_secret: String,
    /// The app's launcher activity, needed to set the badge (optional).
    pub badge_class: Option<String>,
}

pub struct Hms {
    config: HmsConfig,
    client: reqwest::Client,
    token: CachedToken,
}

impl Hms {
    pub fn new(config: HmsConfig) -> Self {
        Hms {
            config,
            client: super::http_client(false),
            token: CachedToken::default(),
        }
    }

    async fn attempt(&self, notice: &Notice) -> SendOutcome {
        let token = self
            .token
            .get(|| async {
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", self.config.app_id.as_str()),
                    ("client_secret", self.config.client_secret.as_str()),
                ];
                super::oauth_token(&self.client, &self.config.token_url, &form).await
            })
            .await;
        let token = match token {
            Ok(token) => token,
            Err(error) => return super::token_failure("HMS", error),
        };
        let url = format!(
            "{}/v1/{}/messages:send",
            self.config.url.trim_end_matches('/'),
            self.config.app_id
        );
        let request = self
            .client
            .post(url)
            .bearer_auth(token)
            .json(&message(notice, self.config.badge_class.as_deref()));
        super::send_authorized(request, &self.token, |status, headers, body| {
            outcome(status, headers, body, &notice.token)
        })
        .await
    }
}

impl Provider for Hms {
    fn send<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.attempt(notice))
    }
}

/// The downlink message for one notice (pure).
pub fn message(notice: &Notice, badge_class: Option<&str>) -> Value {
    let mut notification = json!({
        "title": notice.title,
        "body": notice.body,
        "click_action": {"type": 3},
        "tag": notice.conversation_id,
    });
    if let Some(class) = badge_class {
        notification["badge"] = json!({"set_num": notice.badge, "class": class});
    }
    json!({
        "validate_only": false,
        "message": {
            "token": [notice.token],
            "data": json!({
                "notification_id": notice.notification_id,
                "conversation_id": notice.conversation_id,
                "first_seq": notice.first_seq,
                "last_seq": notice.last_seq,
                "count": notice.count,
            }).to_string(),
            "android": {
                "collapse_key": -1,
                "notification": notification,
            },
        },
    })
}

/// Push Kit's answer: the outcome, and whether the access token must be
/// renewed. `80100000` (partly successful) and `80300007` (all tokens
/// invalid) list the refused tokens.
pub fn outcome(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    token: &str,
) -> (SendOutcome, bool) {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = parsed["code"].as_str().unwrap_or_default();
    let text = answer(status, body);
    if !status.is_success() && code.is_empty() {
        return (
            classify(status, headers, body),
            status == StatusCode::UNAUTHORIZED,
        );
    }
    match code {
        "80000000" => (SendOutcome::Delivered(text), false),
        "80300007" => (SendOutcome::InvalidToken(text), false),
        "80100000" => {
            let illegal = serde_json::from_str::<Value>(parsed["msg"].as_str().unwrap_or("{}"))
                .ok()
                .and_then(|msg| msg["illegal_tokens"].as_array().cloned())
                .unwrap_or_default();
            if illegal.iter().any(|t| t.as_str() == Some(token)) {
                (SendOutcome::InvalidToken(text), false)
            } else {
                (SendOutcome::Delivered(text), false)
            }
        }
        // Access token expired or refused: renew it and try again.
        "80200001" | "80200003" => (
            SendOutcome::Retry {
                after: None,
                answer: text,
            },
            true,
        ),
        // Internal error, or flow control.
        "81000001" | "80300010" => (
            SendOutcome::Retry {
                after: super::retry_after(headers, chrono::Utc::now()),
                answer: text,
            },
            false,
        ),
        _ if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
            (classify(status, headers, body), false)
        }
        _ => (SendOutcome::Failed(text), false),
    }
}

#[cfg(test)]
mod tests;
