//! The browser chat at `/app/` (static files of `clients/js`, built by
//! `npm run build`, served from `IM_APP_DIR`), and, for development only,
//! `POST /v1/dev/token`, which mints a user token for a name (`imctl up`
//! turns it on with `IM_DEV_TOKENS=true`; off, it answers 404).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::Gateway;

/// How long a development token lives.
const DEV_TOKEN_SECS: i64 = 12 * 3600;

pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/app", get(|| async { Redirect::permanent("/app/") }))
        .route("/app/", get(index))
        .route("/app/{*path}", get(file))
        .route("/v1/dev/token", post(dev_token))
}

async fn index(State(gateway): State<Arc<Gateway>>) -> Response {
    serve(&gateway, "app/index.html").await
}

async fn file(State(gateway): State<Arc<Gateway>>, UrlPath(path): UrlPath<String>) -> Response {
    serve(&gateway, &path).await
}

/// The file under `root` a request path names, or None if it names
/// anything outside it (`..`, an absolute path, a drive).
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path);
    if path.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    Some(root.join(relative))
}

pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

async fn serve(gateway: &Gateway, path: &str) -> Response {
    let Some(root) = &gateway.config.app_dir else {
        return crate::http::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the web app is not served here: build it (cd clients/js && npm ci && npm run build) and start the gateway with IM_APP_DIR=clients/js/dist (imctl up does)",
        );
    };
    let Some(file) = resolve(root, path) else {
        return crate::http::error(StatusCode::NOT_FOUND, "not_found", "no such file");
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&file)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => crate::http::error(StatusCode::NOT_FOUND, "not_found", "no such file"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    user: String,
    /// Absent means "web"; null is not a device.
    #[serde(default, deserialize_with = "present")]
    device: Option<String>,
}

/// A field that, when present, must be a string (serde's Option takes null).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

/// Development only: a token for any user name, signed with the
/// deployment's user key.
async fn dev_token(State(gateway): State<Arc<Gateway>>, body: axum::body::Bytes) -> Response {
    if !gateway.config.dev_tokens {
        return crate::http::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "development tokens are off here (IM_DEV_TOKENS=true turns them on; never in production)",
        );
    }
    let Ok(request) = serde_json::from_slice::<DevTokenRequest>(&body) else {
        return crate::http::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            r#"send {"user": "<name>", "device": "<optional device>"}"#,
        );
    };
    let device = request.device.unwrap_or_else(|| "web".to_string());
    if im_events::ids::device_source(&request.user, &device).is_err() {
        return crate::http::error(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "user and device are 1-128 characters of [A-Za-z0-9._@-]",
        );
    }
    let Some(secret) = &gateway.config.keys.user_secret else {
        return crate::http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this gateway checks tokens with an identity provider's keys only; it cannot mint one",
        );
    };
    let now = chrono::Utc::now().timestamp();
    let token = crate::auth::mint_device(secret, &request.user, &device, now, DEV_TOKEN_SECS);
    Json(json!({"token": token, "user": request.user, "device": device, "exp": now + DEV_TOKEN_SECS}))
        .into_response()
}

#[cfg(test)]
mod tests;
