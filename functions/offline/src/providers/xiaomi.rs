//! Xiaomi Push (MiPush): `POST /v3/message/regid` with a form body and
//! `Authorization: key=<AppSecret>`. The JSON answer has `result` ("ok" or
//! "error") and `code` (0 on success); refused registration ids are listed
//! in `data.bad_regids`.

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{answer, classify, execute, Notice, Provider, SendOutcome};

#[derive(Debug, Clone)]
pub struct XiaomiConfig {
    /// `https://api.xmpush.xiaomi.com`.
    pub url: String,
    pub app_secret: String,
    /// The Android package (`restricted_package_name`).
    pub package: String,
}

pub struct Xiaomi {
    config: XiaomiConfig,
    client: reqwest::Client,
}

impl Xiaomi {
    pub fn new(config: XiaomiConfig) -> Self {
        Xiaomi {
            config,
            client: super::http_client(false),
        }
    }

    async fn attempt(&self, notice: &Notice) -> SendOutcome {
        let url = format!("{}/v3/message/regid", self.config.url.trim_end_matches('/'));
        let form = form(notice, &self.config.package);
        let request = self
            .client
            .post(url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("key={}", self.config.app_secret),
            )
            .form(&form);
        match execute(request).await {
            Ok((status, headers, body)) => outcome(status, &headers, &body, &notice.token),
            Err(outcome) => outcome,
        }
    }
}

impl Provider for Xiaomi {
    fn send<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.attempt(notice))
    }
}

/// `notify_id` makes a newer notification of a conversation replace the
/// older one in the shade (a non-negative 31-bit integer).
pub fn notify_id(conversation_id: &str) -> u32 {
    (im_events::partition::fnv1a64(conversation_id.as_bytes()) & 0x7fff_ffff) as u32
}

/// The form fields for one notice (pure).
pub fn form(notice: &Notice, package: &str) -> Vec<(&'static str, String)> {
    let payload = json!({
        "notification_id": notice.notification_id,
        "conversation_id": notice.conversation_id,
        "first_seq": notice.first_seq,
        "last_seq": notice.last_seq,
        "count": notice.count,
        "badge": notice.badge,
    });
    vec![
        ("registration_id", notice.token.clone()),
        ("restricted_package_name", package.to_string()),
        ("title", notice.title.clone()),
        ("description", notice.body.clone()),
        ("payload", payload.to_string()),
        ("pass_through", "0".to_string()),
        ("notify_type", "-1".to_string()),
        ("notify_id", notify_id(&notice.conversation_id).to_string()),
        ("extra.notify_foreground", "1".to_string()),
    ]
}

pub fn outcome(status: StatusCode, headers: &HeaderMap, body: &str, token: &str) -> SendOutcome {
    if !status.is_success() {
        return classify(status, headers, body);
    }
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let text = answer(status, body);
    let bad = parsed["data"]["bad_regids"]
        .as_str()
        .map(|ids| ids.split(',').any(|id| id.trim() == token))
        .unwrap_or(false);
    if bad {
        return SendOutcome::InvalidToken(text);
    }
    match (parsed["result"].as_str(), parsed["code"].as_i64()) {
        (Some("ok"), Some(0)) => SendOutcome::Delivered(text),
        _ => SendOutcome::Failed(text),
    }
}

#[cfg(test)]
mod tests;
