//! Push providers: one client per external service, behind one trait.
//!
//! Each provider turns a [`Notice`] into its service's real request and its
//! answer into a [`SendOutcome`]: delivered, the token is invalid (remove
//! it), retry later (honouring `Retry-After`), or failed for good. Endpoints
//! are configurable so tests can point them at local stand-ins. A provider's
//! concurrency is bounded by a semaphore shared by every partition.

pub mod apns;
pub mod fcm;
pub mod hms;
pub mod webhook;
pub mod xiaomi;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// What one device is told: the payload of a queued notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub notification_id: String,
    pub user_id: String,
    pub device_id: String,
    pub token: String,
    pub conversation_id: String,
    pub title: String,
    pub body: String,
    /// The user's total unread count.
    pub badge: u64,
    /// Messages this notification stands for, and their seq range.
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub mentioned: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Accepted; the provider's answer.
    Delivered(String),
    /// The provider says the token will never work again.
    InvalidToken(String),
    /// Try again later (throttled, unavailable, network); `after` is the
    /// provider's `Retry-After`.
    Retry {
        after: Option<Duration>,
        answer: String,
    },
    /// Refused for good (a bad request, a misconfiguration).
    Failed(String),
}

pub trait Provider: Send + Sync {
    fn send<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, SendOutcome>;
}

/// Every configured provider, with its concurrency bound.
pub struct Providers {
    providers: HashMap<String, (Arc<dyn Provider>, Arc<Semaphore>)>,
}

impl Providers {
    pub fn builder(concurrency: usize) -> ProvidersBuilder {
        ProvidersBuilder {
            concurrency: concurrency.max(1),
            providers: HashMap::new(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.providers.keys().cloned().collect();
        names.sort();
        names
    }

    /// Send through `provider`, waiting for one of its slots.
    pub async fn send(&self, provider: &str, notice: &Notice) -> SendOutcome {
        let Some((client, slots)) = self.providers.get(provider) else {
            return SendOutcome::Failed(format!(
                "push provider {provider} is not configured on the offline function; \
                 configure it (see im-offline --help); the device's notifications are dead-lettered until then"
            ));
        };
        let Ok(_slot) = slots.acquire().await else {
            return SendOutcome::Retry {
                after: None,
                answer: "provider closed".into(),
            };
        };
        let started = Instant::now();
        let outcome = client.send(notice).await;
        let result = match &outcome {
            SendOutcome::Delivered(_) => "delivered",
            SendOutcome::InvalidToken(_) => "invalid_token",
            SendOutcome::Retry { .. } => "retry",
            SendOutcome::Failed(_) => "failed",
        };
        metrics::counter!("im_notifications_total", "provider" => provider.to_string(), "result" => result)
            .increment(1);
        metrics::histogram!("im_notification_send_seconds", "provider" => provider.to_string())
            .record(started.elapsed().as_secs_f64());
        outcome
    }
}

pub struct ProvidersBuilder {
    concurrency: usize,
    providers: HashMap<String, (Arc<dyn Provider>, Arc<Semaphore>)>,
}

impl ProvidersBuilder {
    pub fn with(mut self, name: &str, provider: Arc<dyn Provider>) -> Self {
        self.providers.insert(
            name.to_string(),
            (provider, Arc::new(Semaphore::new(self.concurrency))),
        );
        self
    }

    pub fn build(self) -> Providers {
        Providers {
            providers: self.providers,
        }
    }
}

/// An HTTP client for providers: HTTP/2 where the server offers it (ALPN),
/// or always (`http2_only`, as APNs requires: over plain `http://` this
/// speaks HTTP/2 with prior knowledge, which test stand-ins use).
pub fn http_client(http2_only: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(300))
        .user_agent(concat!("im-offline/", env!("CARGO_PKG_VERSION")));
    let builder = if http2_only {
        builder.http2_prior_knowledge()
    } else {
        builder
    };
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

/// A provider's answer as it is logged and dead-lettered: status and body.
pub fn answer(status: StatusCode, body: &str) -> String {
    let body: String = body.chars().take(500).collect();
    if body.trim().is_empty() {
        status.to_string()
    } else {
        format!("{status} {}", body.trim())
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - now;
    Some(wait.to_std().unwrap_or_default())
}

/// The classification every provider starts from: 2xx delivered, 408/429
/// and 5xx retried, any other status failed.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> SendOutcome {
    let text = answer(status, body);
    if status.is_success() {
        SendOutcome::Delivered(text)
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        SendOutcome::Retry {
            after: retry_after(headers, chrono::Utc::now()),
            answer: text,
        }
    } else {
        SendOutcome::Failed(text)
    }
}

/// Send a request; a network failure is retried later.
pub async fn execute(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, HeaderMap, String), SendOutcome> {
    let response = request.send().await.map_err(|error| SendOutcome::Retry {
        after: None,
        answer: format!("request failed: {error}"),
    })?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    Ok((status, headers, body))
}

/// Send a request authorized with a cached token and read the answer with
/// `read`, which also says whether the token was refused (then it is
/// forgotten, and the next attempt gets a fresh one).
pub async fn send_authorized(
    request: reqwest::RequestBuilder,
    token: &CachedToken,
    read: impl FnOnce(StatusCode, &HeaderMap, &str) -> (SendOutcome, bool),
) -> SendOutcome {
    let (status, headers, body) = match execute(request).await {
        Ok(answered) => answered,
        Err(outcome) => return outcome,
    };
    let (outcome, refused) = read(status, &headers, &body);
    if refused {
        token.invalidate().await;
    }
    outcome
}

/// An access token (OAuth2 or provider JWT) reused until shortly before it
/// expires; refreshed by one caller at a time.
#[derive(Default)]
pub struct CachedToken {
    value: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl CachedToken {
    /// The cached token, or a new one from `refresh` (token and lifetime).
    pub async fn get<F, Fut>(&self, refresh: F) -> Result<String, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), String>>,
    {
        let mut value = self.value.lock().await;
        if let Some((token, expires)) = value.as_ref() {
            if Instant::now() + Duration::from_secs(60) < *expires {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = refresh().await?;
        *value = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// Forget the token (the provider refused it).
    pub async fn invalidate(&self) {
        *self.value.lock().await = None;
    }
}

/// Fetch an OAuth2 access token from `url` with a form body; the answer is
/// `{"access_token": …, "expires_in": seconds}`.
pub async fn oauth_token(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<(String, Duration), String> {
    #[derive(Deserialize)]
    struct TokenAnswer {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let (status, _, body) = execute(client.post(url).form(form))
        .await
        .map_err(|outcome| format!("token endpoint {url}: {outcome:?}"))?;
    if !status.is_success() {
        return Err(format!(
            "token endpoint {url} answered {}",
            answer(status, &body)
        ));
    }
    let parsed: TokenAnswer = serde_json::from_str(&body)
        .map_err(|error| format!("token endpoint {url} answered unreadable JSON: {error}"))?;
    Ok((
        parsed.access_token,
        Duration::from_secs(parsed.expires_in.unwrap_or(3600).max(60)),
    ))
}

/// A token-fetch failure: retried later, since credentials are the
/// operator's to fix and the endpoint may be down.
pub fn token_failure(provider: &str, error: String) -> SendOutcome {
    SendOutcome::Retry {
        after: None,
        answer: format!("{provider} access token: {error}"),
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
pub(crate) fn sample_notice() -> Notice {
    Notice {
        notification_id: "3f0f1a0e-7c1b-5d3a-9a61-0d1e22f48b31".into(),
        user_id: "bob".into(),
        device_id: "phone".into(),
        token: "abc123".into(),
        conversation_id: "g:team".into(),
        title: "Team".into(),
        body: "3 new messages".into(),
        badge: 5,
        count: 3,
        first_seq: 4,
        last_seq: 6,
        mentioned: false,
    }
}

#[cfg(test)]
mod tests;
