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
                let text = error.to_string();
                if text.to_ascii_lowercase().contains("too long")
                    || text.to_ascii_lowercase().contains("capacity")
                    || text.contains("size")
                {
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
            Message::Text(text) => handle_text(&gateway, &context, text.as_str()).await,
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

/// How many of `items`, in the order given, fit in a reply of `budget`
/// bytes; at least one, so a client always gets on.
fn fitting<'a>(items: impl Iterator<Item = &'a Value>, budget: usize) -> usize {
    let mut used = 0;
    let mut count = 0;
    for item in items {
        used += item.to_string().len() + 1;
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

fn pipeline_error((code, reason): (String, String), client_msg_id: Option<&str>) -> Value {
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

async fn handle(
    gateway: &Arc<Gateway>,
    context: &Arc<Context>,
    frame: ClientFrame,
) -> Result<(), FrameError> {
    if frame.is_write() {
        if let Err(wait) = gateway.check_write(&context.user) {
            return Err(FrameError {
                code: "rate_limited",
                message: rate_limited(gateway.config.messages_per_second, wait),
                client_msg_id: frame.client_msg_id().map(str::to_string),
            });
        }
    }
    let frame_kind = match &frame {
        ClientFrame::Unreact { .. } => FrameKind::Unreact,
        ClientFrame::Block { .. } => FrameKind::Block,
        _ => FrameKind::Other,
    };
    match frame {
        ClientFrame::Ping {} => context.send(json!({"op": "pong"})).await,
        ClientFrame::Auth { token } => {
            // The same user and device, and a user token: a session never
            // changes whose it is.
            let claims = gateway
                .verifier
                .verify(&token)
                .await
                .map_err(|error| FrameError::new(error.code(), error.to_string()))?;
            if claims.svc || claims.sub != context.user || claims.dev != context.device {
                return Err(FrameError::new(
                    "forbidden",
                    format!(
                        "the token is not for {} on {}; a session keeps its user and device",
                        context.user, context.device
                    ),
                ));
            }
            context.expires_at.store(claims.exp, Ordering::Release);
            context
                .send(json!({"op": "authenticated", "exp": claims.exp}))
                .await
        }
        ClientFrame::Send {
            conversation_id,
            client_msg_id,
            kind,
            body,
            mentions,
            reply_to,
        } => {
            let mut data = json!({"conversation_id": conversation_id, "sender_id": context.user, "kind": kind, "body": body, "mentions": mentions});
            if let Some(reply_to) = reply_to {
                data["reply_to"] = json!(reply_to);
            }
            // Published in frame order; the verdicts are awaited concurrently.
            context.in_flight.fetch_add(1, Ordering::AcqRel);
            let received = std::time::Instant::now();
            let pending = match gateway
                .begin("im.message.send", &context.source, &client_msg_id, data)
                .await
            {
                Ok(pending) => pending,
                Err(error) => {
                    context
                        .send(pipeline_error(error, Some(&client_msg_id)))
                        .await;
                    context.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Ok(());
                }
            };
            let (gateway, context) = (gateway.clone(), context.clone());
            tokio::spawn(async move {
                let frame = match pending.finish(&gateway).await {
                    Ok(im_events::Verdict {
                        message: Some(message),
                        ..
                    }) => {
                        metrics::histogram!("im_gateway_send_ack_seconds")
                            .record(received.elapsed().as_secs_f64());
                        json!({"op": "ack", "client_msg_id": client_msg_id, "message_id": message.message_id,
                               "conversation_id": message.conversation_id, "seq": message.seq})
                    }
                    Ok(_) => pipeline_error(
                        (
                            "internal".to_string(),
                            "the pipeline applied the send but named no message; resend with the same id".to_string(),
                        ),
                        Some(&client_msg_id),
                    ),
                    Err(error) => pipeline_error(error, Some(&client_msg_id)),
                };
                context.send(frame).await;
                context.in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        }
        ClientFrame::Sync { after, limit } => {
            let limit = limit.unwrap_or(100).clamp(1, 1000);
            // Large groups deliver no copies: have them copied into this
            // user's log first, so sync works the same for every conversation.
            let (store, user) = (gateway.users.clone(), context.user.clone());
            let in_large_groups =
                tokio::task::spawn_blocking(move || store.user_conversations(&user))
                    .await
                    .map_err(store_error)?
                    .map_err(store_error)?
                    .iter()
                    .any(|row| row.diffusion == im_events::Diffusion::Read);
            if in_large_groups {
                if let Err((code, reason)) = gateway.materialize(&context.user).await {
                    tracing::warn!(%code, %reason, "large-group messages not copied before sync");
                }
            }
            let store = gateway.users.clone();
            let user = context.user.clone();
            let (floor, mut records) = tokio::task::spawn_blocking(move || {
                let floor = store.sync_floor(&user)?;
                if after < floor {
                    return Ok((floor, Vec::new()));
                }
                store
                    .sync_items(&user, after, limit + 1)
                    .map(|items| (floor, items))
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)?;
            if after < floor {
                // The log before `floor` was compacted: this device missed
                // items it can no longer get from it.
                context
                    .send(json!({"op": "sync_result", "items": [], "next": floor, "has_more": true,
                                 "resync": true,
                                 "message": format!("the sync log before {} was compacted: read `conversations` and each conversation's `history` for what changed, then sync from next", floor + 1)}))
                    .await;
                return Ok(());
            }
            let mut has_more = records.len() > limit;
            records.truncate(limit);
            let mut items: Vec<Value> = records
                .into_iter()
                .map(|record| {
                    let mut item = record.item;
                    item["sync_seq"] = json!(record.sync_seq);
                    item
                })
                .collect();
            let reply = |items: &[Value], has_more: bool| {
                let next = items
                    .last()
                    .and_then(|item| item["sync_seq"].as_u64())
                    .unwrap_or(after);
                json!({"op": "sync_result", "items": items, "next": next, "has_more": has_more})
                    .to_string()
            };
            let mut text = reply(&items, has_more);
            if text.len() > gateway.config.max_reply_bytes {
                // Oldest first: keep the head that fits, the rest comes next.
                let fits = fitting(items.iter(), gateway.config.max_reply_bytes);
                has_more |= fits < items.len();
                items.truncate(fits);
                text = reply(&items, has_more);
            }
            let _ = context.outbox.push_text(text);
        }
        ClientFrame::History {
            conversation_id,
            before_seq,
            limit,
        } => {
            let store = gateway.conversations.clone();
            let limit = limit.unwrap_or(50).clamp(1, 500);
            let (conversation, user) = (conversation_id.clone(), context.user.clone());
            let messages = tokio::task::spawn_blocking(move || {
                readable_history(
                    store.as_ref(),
                    Reader::User(&user),
                    &conversation,
                    before_seq,
                    limit,
                )
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)?;
            let messages = match messages {
                Some(messages) => messages,
                // A direct conversation exists from its first message: one
                // of the user's own that has none yet is simply empty.
                None if im_events::ids::direct_members(&conversation_id)
                    .is_some_and(|(a, b)| a == context.user || b == context.user)
                    && !conversation_exists(gateway, &conversation_id).await? =>
                {
                    Vec::new()
                }
                None => return Err(not_member(&context.user, &conversation_id)),
            };
            // Ascending: keep the newest that fit; `truncated` tells the
            // client to page on from the oldest it got.
            let mut text = json!({"op": "history_result", "conversation_id": conversation_id, "messages": messages}).to_string();
            if text.len() > gateway.config.max_reply_bytes {
                let messages: Vec<Value> = messages.iter().map(|m| json!(m)).collect();
                let fits = fitting(messages.iter().rev(), gateway.config.max_reply_bytes);
                let kept = &messages[messages.len() - fits..];
                let mut frame = json!({"op": "history_result", "conversation_id": conversation_id, "messages": kept});
                if fits < messages.len() {
                    frame["truncated"] = json!(true);
                }
                text = frame.to_string();
            }
            let _ = context.outbox.push_text(text);
        }
        ClientFrame::Conversations {} => {
            let (users, conversations, user) = (
                gateway.users.clone(),
                gateway.conversations.clone(),
                context.user.clone(),
            );
            let summary = tokio::task::spawn_blocking(move || {
                unread_summary(users.as_ref(), conversations.as_ref(), &user)
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)?;
            let items: Vec<Value> = summary
                .items
                .iter()
                .map(|row| {
                    json!({"conversation_id": row.conversation_id, "last_seq": row.last_seq, "read_seq": row.read_seq,
                           "unread": row.unread(), "muted_until": row.muted_until_ms.map(im_events::rfc3339_ms),
                           "last_message": row.last_message})
                })
                .collect();
            context.send(json!({"op": "conversations_result", "items": items, "total_unread": summary.total_unread})).await;
        }
        ClientFrame::Read {
            conversation_id,
            seq,
        } => {
            let data =
                json!({"conversation_id": conversation_id, "user_id": context.user, "seq": seq});
            submit_then(
                gateway,
                context,
                "im.message.read",
                data,
                move |gateway, context| async move {
                    Some(unread_after_read(&gateway, &context.user, &conversation_id, seq).await)
                },
            )
            .await;
        }
        ClientFrame::Mute {
            conversation_id,
            until,
        } => {
            let data = json!({"user_id": context.user, "conversation_id": conversation_id, "until": until});
            submit_then(gateway, context, "im.user.mute", data, move |gateway, context| async move {
                // Answered once the list shows it, like a read.
                let wanted = until.as_deref().and_then(im_events::parse_rfc3339_ms);
                let row = stored_row_once(&gateway, &context.user, &conversation_id, |row| {
                    row.muted_until_ms == wanted
                })
                .await;
                Some(json!({"op": "muted", "conversation_id": conversation_id,
                            "until": row.and_then(|row| row.muted_until_ms).map(im_events::rfc3339_ms)}))
            })
            .await;
        }
        ClientFrame::Edit {
            conversation_id,
            seq,
            body,
        } => {
            let data = json!({"conversation_id": conversation_id, "seq": seq, "editor_id": context.user, "body": body});
            submit_in_background(gateway, context, "im.message.edit", data).await;
        }
        ClientFrame::Recall {
            conversation_id,
            seq,
        } => {
            let data =
                json!({"conversation_id": conversation_id, "seq": seq, "actor_id": context.user});
            submit_in_background(gateway, context, "im.message.recall", data).await;
        }
        ClientFrame::Typing { conversation_id } => {
            require_member(gateway, &conversation_id, &context.user).await?;
            let store = gateway.conversations.clone();
            let conversation = conversation_id.clone();
            // Large groups (read diffusion) get no typing at all: one frame
            // would reach every gateway for thousands of members.
            let members =
                tokio::task::spawn_blocking(move || match store.conversation(&conversation)? {
                    Some(record) if record.diffusion == im_events::Diffusion::Write => {
                        store.current_members(&conversation)
                    }
                    _ => Ok(Vec::new()),
                })
                .await
                .map_err(store_error)?
                .map_err(store_error)?;
            // Ephemeral: core NATS only, never stored.
            let frame = json!({"op": "typing", "conversation_id": conversation_id, "user_id": context.user});
            let others: Vec<String> = members.into_iter().filter(|m| *m != context.user).collect();
            gateway.broadcast(&others, &frame).await;
        }
        ClientFrame::RegisterPush { provider, token } => {
            match gateway
                .register_push(&context.user, &context.device, &provider, &token)
                .await
            {
                Ok(registered) => {
                    let mut frame = registered;
                    frame["op"] = json!("push_registered");
                    context.send(frame).await;
                }
                Err(error) => return Err(registration_error(error)),
            }
        }
        ClientFrame::UnregisterPush {} => {
            gateway
                .unregister_push(&context.user, &context.device)
                .await
                .map_err(registration_error)?;
            context
                .send(json!({"op": "push_unregistered", "device_id": context.device}))
                .await;
        }
        ClientFrame::React {
            conversation_id,
            seq,
            emoji,
        }
        | ClientFrame::Unreact {
            conversation_id,
            seq,
            emoji,
        } => {
            let remove = matches!(frame_kind, FrameKind::Unreact);
            let mut data = json!({"conversation_id": conversation_id, "seq": seq, "user_id": context.user, "emoji": emoji});
            if remove {
                data["remove"] = json!(true);
            }
            // The pushed `reacted` reaches every member's devices, this
            // one's too; a refusal comes back as an error frame.
            submit_in_background(gateway, context, "im.message.react", data).await;
        }
        ClientFrame::Block { user_id } | ClientFrame::Unblock { user_id } => {
            let (event_type, op) = match frame_kind {
                FrameKind::Block => ("im.user.block", "blocked"),
                _ => ("im.user.unblock", "unblocked"),
            };
            let data = json!({"user_id": context.user, "blocked_user_id": user_id});
            submit_then(gateway, context, event_type, data, move |_, _| async move {
                Some(json!({"op": op, "user_id": user_id}))
            })
            .await;
        }
        ClientFrame::Receipts { conversation_id } => {
            require_member(gateway, &conversation_id, &context.user).await?;
            let store = gateway.conversations.clone();
            let conversation = conversation_id.clone();
            let frame = tokio::task::spawn_blocking(move || {
                let Some(record) = store.conversation(&conversation)? else {
                    return Ok(None);
                };
                let receipts = store.receipts(&conversation)?;
                Ok::<_, im_store::StoreError>(Some(receipts_frame(
                    &record,
                    if record.diffusion == im_events::Diffusion::Write {
                        store.current_members(&conversation)?
                    } else {
                        vec![]
                    },
                    receipts,
                )))
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)?
            .ok_or_else(|| not_member(&context.user, &conversation_id))?;
            context.send(frame).await;
        }
        ClientFrame::Presence { users } => {
            require_shared(gateway, &context.user, &users).await?;
            let entries = gateway.presence_hub.lookup(&users).await;
            context
                .send(json!({"op": "presence_result", "users": entries}))
                .await;
        }
        ClientFrame::PresenceSubscribe { users } => {
            require_shared(gateway, &context.user, &users).await?;
            gateway
                .presence_hub
                .subscribe(
                    context.connection,
                    &context.outbox,
                    &users,
                    frames::MAX_PRESENCE_USERS,
                )
                .map_err(|wanted| {
                    FrameError::new(
                        "limit_reached",
                        format!(
                            "a connection follows at most {} users ({wanted} asked); unsubscribe some first",
                            frames::MAX_PRESENCE_USERS
                        ),
                    )
                })?;
            let entries = gateway.presence_hub.lookup(&users).await;
            context
                .send(json!({"op": "presence_result", "users": entries}))
                .await;
        }
        ClientFrame::PresenceUnsubscribe { users } => {
            gateway.presence_hub.unsubscribe(context.connection, &users);
            context
                .send(json!({"op": "presence_unsubscribed", "users": users}))
                .await;
        }
        ClientFrame::Delivered { sync_seq } => {
            let key = crate::kv_key(&context.user, &context.device);
            let current = match gateway.delivered.get(&key).await {
                Ok(Some(value)) => String::from_utf8_lossy(&value).parse::<u64>().unwrap_or(0),
                _ => 0,
            };
            if sync_seq > current {
                report_delivery(gateway, context, current, sync_seq).await;
                gateway
                    .delivered
                    .put(&key, sync_seq.to_string().into())
                    .await
                    .map_err(|error| {
                        FrameError::new(
                            "unavailable",
                            format!("delivered cursor not saved: {error}; send it again"),
                        )
                    })?;
            }
        }
    }
    Ok(())
}

/// Which of a shared match arm's frames it was.
enum FrameKind {
    Unreact,
    Block,
    Other,
}

async fn conversation_exists(
    gateway: &Arc<Gateway>,
    conversation_id: &str,
) -> Result<bool, FrameError> {
    let (store, id) = (gateway.conversations.clone(), conversation_id.to_string());
    Ok(tokio::task::spawn_blocking(move || store.conversation(&id))
        .await
        .map_err(store_error)?
        .map_err(store_error)?
        .is_some())
}

/// The `receipts_result` of a conversation (pure): every member's marks in
/// write diffusion (a read counts as delivered too); in large groups only
/// how many members have read and received up to the last seq.
pub fn receipts_frame(
    record: &im_store::ConversationRecord,
    members: Vec<String>,
    receipts: Vec<im_store::Receipt>,
) -> Value {
    let marks: std::collections::HashMap<&str, (u64, u64)> = receipts
        .iter()
        .map(|r| {
            (
                r.user_id.as_str(),
                (r.read_seq, r.delivered_seq.max(r.read_seq)),
            )
        })
        .collect();
    if record.diffusion == im_events::Diffusion::Read {
        let last = record.last_seq;
        let read = marks.values().filter(|(r, _)| *r >= last).count();
        let delivered = marks.values().filter(|(_, d)| *d >= last).count();
        return json!({"op": "receipts_result", "conversation_id": record.conversation_id,
                      "members": [], "counts": {"members": record.member_count, "at_seq": last,
                                                "read": read, "delivered": delivered}});
    }
    let members: Vec<Value> = members
        .iter()
        .map(|user| {
            let (read, delivered) = marks.get(user.as_str()).copied().unwrap_or_default();
            json!({"user_id": user, "read_seq": read, "delivered_seq": delivered})
        })
        .collect();
    json!({"op": "receipts_result", "conversation_id": record.conversation_id, "members": members})
}

/// Presence only of users who share a conversation with the requester
/// (themselves included); asking about anyone else is refused whole, and
/// the refusal is the same whether that user exists or not.
async fn require_shared(
    gateway: &Arc<Gateway>,
    user: &str,
    others: &[String],
) -> Result<(), FrameError> {
    let (store, conversations, me, others) = (
        gateway.users.clone(),
        gateway.conversations.clone(),
        user.to_string(),
        others.to_vec(),
    );
    let strangers = tokio::task::spawn_blocking(move || {
        let mine: std::collections::HashSet<String> = store
            .user_conversations(&me)?
            .into_iter()
            .map(|row| row.conversation_id)
            .collect();
        let mut strangers = Vec::new();
        for other in others.iter().filter(|o| **o != me) {
            // The users' lists are unread's projection and lag the commit;
            // a direct conversation is known once its first message is
            // committed (its ack), so a reply to "sent" never reads as
            // "you share nothing".
            let direct = im_events::ids::direct_conversation_id(&me, other);
            let shared = mine.contains(&direct)
                || conversations.conversation(&direct)?.is_some()
                || store
                    .user_conversations(other)?
                    .iter()
                    .any(|row| mine.contains(&row.conversation_id));
            if !shared {
                strangers.push(other.clone());
            }
        }
        Ok::<_, im_store::StoreError>(strangers)
    })
    .await
    .map_err(store_error)?
    .map_err(store_error)?;
    if strangers.is_empty() {
        Ok(())
    } else {
        Err(FrameError::new(
            "forbidden",
            format!(
                "presence only of users you share a conversation with; not of {}",
                strangers.join(", ")
            ),
        ))
    }
}

/// Most sync items one `delivered` frame turns into receipts.
const DELIVERY_SCAN: u64 = 1000;

/// A device's delivered cursor moved from `from` to `to` (sync_seqs): the
/// messages of others in that part of its log become `im.message.delivered`
/// events, one per conversation with the highest seq, so their senders get
/// receipts. Refusals (a conversation left meanwhile) are only logged.
async fn report_delivery(gateway: &Arc<Gateway>, context: &Arc<Context>, from: u64, to: u64) {
    let (store, user) = (gateway.users.clone(), context.user.clone());
    let after = from.max(to.saturating_sub(DELIVERY_SCAN));
    let items =
        tokio::task::spawn_blocking(move || store.sync_items(&user, after, (to - after) as usize))
            .await;
    let Ok(Ok(items)) = items else { return };
    let mut highest: std::collections::BTreeMap<String, u64> = Default::default();
    for record in items.iter().filter(|r| r.sync_seq <= to) {
        let item = &record.item;
        if item["type"] != "message" || item["sender_id"] == context.user.as_str() {
            continue;
        }
        if let (Some(conversation), Some(seq)) =
            (item["conversation_id"].as_str(), item["seq"].as_u64())
        {
            let entry = highest.entry(conversation.to_string()).or_default();
            *entry = (*entry).max(seq);
        }
    }
    for (conversation_id, seq) in highest {
        let data = json!({"conversation_id": conversation_id, "user_id": context.user, "seq": seq});
        let id = uuid::Uuid::new_v4().to_string();
        match gateway
            .begin("im.message.delivered", &context.source, &id, data)
            .await
        {
            Ok(pending) => {
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    if let Err((code, reason)) = pending.finish(&gateway).await {
                        tracing::debug!(%code, %reason, "delivery receipt not applied");
                    }
                });
            }
            Err((code, reason)) => {
                tracing::debug!(%code, %reason, "delivery receipt not published")
            }
        }
    }
}

fn registration_error(error: crate::push_tokens::RegistrationError) -> FrameError {
    match error {
        crate::push_tokens::RegistrationError::Invalid(message) => {
            FrameError::new("bad_frame", message)
        }
        crate::push_tokens::RegistrationError::Limit(message) => {
            FrameError::new("limit_reached", message)
        }
        crate::push_tokens::RegistrationError::Unavailable(message) => {
            FrameError::new("unavailable", message)
        }
    }
}

async fn submit_in_background(
    gateway: &Arc<Gateway>,
    context: &Arc<Context>,
    event_type: &'static str,
    data: Value,
) {
    submit_then(gateway, context, event_type, data, |_, _| async { None }).await
}

/// Publish an event for this device and, in the background, wait for the
/// pipeline's verdict: a refusal becomes an `error` frame; once accepted,
/// `answer` may say what to send back.
async fn submit_then<F, A>(
    gateway: &Arc<Gateway>,
    context: &Arc<Context>,
    event_type: &'static str,
    data: Value,
    answer: F,
) where
    F: FnOnce(Arc<Gateway>, Arc<Context>) -> A + Send + 'static,
    A: std::future::Future<Output = Option<Value>> + Send,
{
    let id = uuid::Uuid::new_v4().to_string();
    let pending = gateway.begin(event_type, &context.source, &id, data).await;
    let (gateway, context) = (gateway.clone(), context.clone());
    tokio::spawn(async move {
        let verdict = match pending {
            Ok(pending) => pending.finish(&gateway).await,
            Err(error) => Err(error),
        };
        let frame = match verdict {
            Ok(_) => answer(gateway, context.clone()).await,
            Err(error) => Some(pipeline_error(error, None)),
        };
        if let Some(frame) = frame {
            context.send(frame).await;
        }
    });
}

/// Whether the stored row shows a read mark of `seq`: the mark is at
/// least `seq`, or at the conversation's end if `seq` was beyond it (the
/// unread function clamps it there).
pub fn read_applied(row: &im_store::UserConversation, seq: u64) -> bool {
    match row.diffusion {
        im_events::Diffusion::Write => row.read_seq >= seq.min(row.last_seq),
        // Large groups: dedupe checked the mark against the conversation.
        im_events::Diffusion::Read => row.read_seq >= seq,
    }
}

/// The user's row of a conversation once `applied` holds for it (the
/// unread function applies what dedupe accepted a moment later), or as it
/// is when the ack timeout passes first; None without a row.
pub async fn stored_row_once(
    gateway: &Arc<Gateway>,
    user: &str,
    conversation_id: &str,
    applied: impl Fn(&im_store::UserConversation) -> bool,
) -> Option<im_store::UserConversation> {
    let deadline = tokio::time::Instant::now() + gateway.config.ack_timeout;
    let mut wait = Duration::from_millis(2);
    loop {
        let (users, who, conversation) = (
            gateway.users.clone(),
            user.to_string(),
            conversation_id.to_string(),
        );
        let row = tokio::task::spawn_blocking(move || users.user_conversation(&who, &conversation))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let done = row.as_ref().is_none_or(&applied);
        if done || tokio::time::Instant::now() >= deadline {
            if !done {
                tracing::warn!(
                    user,
                    conversation_id,
                    "change not applied within the ack timeout; answering with the stored state"
                );
            }
            return row;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

/// The unread frame after a read mark was accepted, from the stored state
/// once the unread function has applied the mark (dedupe's verdict comes
/// first): a `conversations` request sent after it then returns the same
/// counts, and the device never sees its own read undone. If the mark does
/// not show within the ack timeout, the stored state as it is.
pub async fn unread_after_read(
    gateway: &Arc<Gateway>,
    user: &str,
    conversation_id: &str,
    seq: u64,
) -> Value {
    stored_row_once(gateway, user, conversation_id, |row| read_applied(row, seq)).await;
    let (users, conversations, who) = (
        gateway.users.clone(),
        gateway.conversations.clone(),
        user.to_string(),
    );
    let conversation = conversation_id.to_string();
    let state = tokio::task::spawn_blocking(move || {
        im_store::unread_state(users.as_ref(), conversations.as_ref(), &who, &conversation)
    })
    .await
    .ok()
    .and_then(Result::ok);
    let Some(state) = state else {
        return json!({"op": "error", "code": "unavailable", "message": "unread counts not readable; send conversations"});
    };
    // `as_of`: a pushed unread frame computed before this read (push lags)
    // has a lower one, and the device keeps the higher.
    json!({"op": "unread", "conversation_id": conversation_id, "unread": state.unread,
           "total": state.total, "as_of": state.as_of})
}

#[cfg(test)]
mod tests;
