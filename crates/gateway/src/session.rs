//! One device's WebSocket session: authenticate, then read frames and answer
//! them; pushed frames reach the device through its outbox.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use im_store::{readable_history, unread_summary, Reader};
use serde_json::{json, Value};

use crate::auth::{self, Claims};
use crate::frames::{self, ClientFrame, FrameError};
use crate::outbox::{Outbox, CLOSE_POLICY, CLOSE_TOO_BIG};
use crate::Refusal;
use crate::{device_source, Gateway};

pub async fn upgrade(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = match auth::token_from(authorization, query.as_deref()) {
        None => Err(auth::AuthError::Missing),
        Some(token) => gateway.verifier.verify(&token).await,
    };
    let claims = match claims {
        Ok(claims) if claims.svc => {
            return (StatusCode::FORBIDDEN, Json(json!({"code": "forbidden", "message": "a device session needs a user token, not a service token"})))
                .into_response()
        }
        Ok(claims) => claims,
        Err(error) => return (StatusCode::UNAUTHORIZED, Json(json!({"code": error.code(), "message": error.to_string()}))).into_response(),
    };
    // The device's events are published under this source; ids that would
    // make it ambiguous are refused here.
    let source = match device_source(&claims.sub, &claims.dev) {
        Ok(source) => source,
        Err(error) => {
            return (StatusCode::FORBIDDEN, Json(json!({"code": "invalid_id", "message": format!("{}; a device session needs a token whose sub and dev can name its source", error.reason)})))
                .into_response()
        }
    };
    if gateway.draining.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"code": "draining", "message": "this gateway is shutting down; GET /v1/connect names another"})))
            .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return (StatusCode::BAD_REQUEST, Json(json!({"code": "bad_request", "message": format!("not a WebSocket upgrade ({rejection}): open it with a WebSocket client")})))
                .into_response()
        }
    };
    let limit = gateway.config.max_frame_bytes;
    let buffer = gateway.config.ws_buffer_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(buffer)
        .write_buffer_size(buffer)
        .on_upgrade(move |socket| run(gateway, claims, source, socket))
}

/// What a frame handler needs to know about its connection.
struct Context {
    user: String,
    device: String,
    source: String,
    outbox: Outbox,
    /// This connection's id at the gateway.
    connection: u64,
    /// Its sends waiting for a verdict (a draining gateway waits for them).
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// When the session's token expires (unix seconds); an `auth` frame
    /// with a fresh token moves it.
    expires_at: AtomicI64,
}

impl Context {
    async fn send(&self, frame: Value) {
        // A refused frame means the connection is closing as slow.
        let _ = self.outbox.push(&frame);
    }
}

async fn run(gateway: Arc<Gateway>, claims: Claims, source: String, socket: WebSocket) {
    let (sink, mut stream) = socket.split();
    let (outbox, writer) = Outbox::new(gateway.config.max_queued_bytes);
    let writer = tokio::spawn(writer.run(sink, gateway.config.write_timeout));
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let connection = match gateway.connect(
        &claims.sub,
        &claims.dev,
        &source,
        outbox.clone(),
        in_flight.clone(),
    ) {
        Ok(id) => id,
        Err(reason) => {
            let frame = FrameError::new("too_many_connections", reason).to_frame();
            outbox.close(Some(&frame), CLOSE_POLICY, "too many connections");
            let _ = writer.await;
            return;
        }
    };
    let context = Arc::new(Context {
        user: claims.sub.clone(),
        device: claims.dev.clone(),
        source,
        outbox,
        connection,
        in_flight,
        expires_at: AtomicI64::new(claims.exp),
    });
    // Whether the socket still holds unread bytes when the session ends (a
    // frame refused half-read): closing it then makes the kernel reset
    // the connection and drop what is still queued for the client, the
    // error and the close frame among them.
    let mut unread_input = false;
    loop {
        let left = context.expires_at.load(Ordering::Acquire) - chrono::Utc::now().timestamp();
        let expiry = tokio::time::sleep(std::time::Duration::from_secs(left.max(0) as u64));
        let next = tokio::select! {
            next = tokio::time::timeout(gateway.config.idle_timeout, stream.next()) => next,
            _ = expiry => {
                if context.expires_at.load(Ordering::Acquire) > chrono::Utc::now().timestamp() {
                    continue; // re-authenticated meanwhile
                }
                let error = FrameError::new(
                    "token_expired",
                    "the session's token expired: send {\"op\":\"auth\",\"token\"} with a fresh token before it does, or reconnect with one",
                )
                .to_frame();
                context.outbox.close(Some(&error), CLOSE_POLICY, "token expired");
                break;
            }
            _ = context.outbox.done() => break,
        };
        let message = match next {
            Err(_) => {
                context
                    .outbox
                    .close(None, 1000, "idle timeout: send ping frames");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                if frame_too_large(error) {
                    let error = FrameError::new(
                        "frame_too_large",
                        format!("frame exceeds {} bytes", gateway.config.max_frame_bytes),
                    )
                    .to_frame();
                    context
                        .outbox
                        .close(Some(&error), CLOSE_TOO_BIG, "frame too large");
                    unread_input = true;
                }
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            // Boxed: a frame's handling (every op's future) would otherwise
            // be part of every idle session's task (massif: 7.2 KB per
            // session task before; docs/BENCHMARKS.md, stop 26).
            Message::Text(text) => Box::pin(handle_text(&gateway, &context, text.as_str())).await,
            Message::Binary(_) => {
                context
                    .send(
                        FrameError::new(
                            "bad_frame",
                            "binary frames are not supported; send JSON text",
                        )
                        .to_frame(),
                    )
                    .await
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    gateway.disconnect(&claims.sub, &claims.dev, connection);
    // Whatever was queued gets the write timeout to go out; then the writer
    // is stopped, so no task outlives its connection.
    context.outbox.close(None, 1000, "closing");
    drop(context);
    let mut writer = writer;
    let grace = gateway.config.write_timeout + std::time::Duration::from_secs(1);
    if tokio::time::timeout(grace, &mut writer).await.is_err() {
        writer.abort();
    }
    if unread_input {
        // Linger so the client reads the refusal before the reset.
        tokio::time::sleep(LINGER).await;
    }
    drop(stream);
}

/// How long a connection refused with unread input stays open after its
/// close frame went out.
/// Whether a socket's read failed because a frame (or message) exceeds the
/// limit: tungstenite's capacity error, told by its type.
fn frame_too_large(error: axum::Error) -> bool {
    matches!(
        error.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

async fn handle_text(gateway: &Arc<Gateway>, context: &Arc<Context>, text: &str) {
    match frames::parse(text) {
        Ok(frame) => {
            metrics::counter!("im_gateway_frames_total", "op" => frame.op()).increment(1);
            if let Err(error) = handle(gateway, context, frame).await {
                count_error(error.code);
                context.send(error.to_frame()).await;
            }
        }
        Err(error) => {
            metrics::counter!("im_gateway_frames_total", "op" => "invalid").increment(1);
            count_error(error.code);
            context.send(error.to_frame()).await
        }
    }
}

/// Error frames by code (codes are a fixed set: a safe label).
fn count_error(code: &str) {
    metrics::counter!("im_gateway_errors_total", "code" => code.to_string()).increment(1);
}

/// The `sync_result` for a page of logged items (`(sync_seq, JSON text)`,
/// oldest first): as many as fit in `budget` bytes (at least one), `next`
/// the last one's `sync_seq` (or `after` for none), `has_more` also when
/// some did not fit.
pub fn sync_reply(
    mut items: Vec<(u64, String)>,
    after: u64,
    mut has_more: bool,
    budget: usize,
) -> String {
    let reply = |items: &[(u64, String)], has_more: bool| {
        let next = items.last().map_or(after, |(seq, _)| *seq);
        let texts: Vec<&str> = items.iter().map(|(_, text)| text.as_str()).collect();
        format!(
            r#"{{"op":"sync_result","items":[{}],"next":{next},"has_more":{has_more}}}"#,
            texts.join(",")
        )
    };
    let text = reply(&items, has_more);
    if text.len() <= budget {
        return text;
    }
    // Oldest first: keep the head that fits, the rest comes next.
    let fits = fitting(items.iter().map(|(_, text)| text.len()), budget);
    has_more |= fits < items.len();
    items.truncate(fits);
    reply(&items, has_more)
}

/// How many items of these serialized lengths, in the order given, fit in a
/// reply of `budget` bytes; at least one, so a client always gets on.
fn fitting(lengths: impl Iterator<Item = usize>, budget: usize) -> usize {
    let mut used = 0;
    let mut count = 0;
    for length in lengths {
        used += length + 1;
        if count > 0 && used > budget {
            break;
        }
        count += 1;
    }
    count
}

/// Why a write was refused, and when to try again.
pub fn rate_limited(per_second: f64, wait: std::time::Duration) -> String {
    format!(
        "more than {per_second} writes per second; retry in {} ms",
        wait.as_millis().max(1)
    )
}

fn store_error(error: impl std::fmt::Display) -> FrameError {
    FrameError::new("unavailable", format!("store: {error}; try again"))
}

fn pipeline_error(Refusal { code, reason }: Refusal, client_msg_id: Option<&str>) -> Value {
    count_error(&code);
    let mut frame = json!({"op": "error", "code": code, "message": reason});
    if let Some(id) = client_msg_id {
        frame["client_msg_id"] = json!(id);
    }
    frame
}

async fn require_member(
    gateway: &Arc<Gateway>,
    conversation_id: &str,
    user: &str,
) -> Result<(), FrameError> {
    let store = gateway.conversations.clone();
    let (conversation, who) = (conversation_id.to_string(), user.to_string());
    let members = tokio::task::spawn_blocking(move || {
        store.memberships(&conversation, std::slice::from_ref(&who))
    })
    .await
    .map_err(store_error)?
    .map_err(store_error)?;
    if members.is_empty() {
        Err(not_member(user, conversation_id))
    } else {
        Ok(())
    }
}

fn not_member(user: &str, conversation_id: &str) -> FrameError {
    FrameError::new(
        "not_member",
        format!("{user} is not a member of {conversation_id}"),
    )
}

mod answers;
mod handle;
pub use answers::*;
use handle::*;

#[cfg(test)]
mod tests;
