//! The HTTP API (documented in `schemas/openapi.yaml`) and the router.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use im_events::inbound::{parse_inbound, Limits};
use im_events::{Command, InboundMessage};
use im_store::{readable_history, Reader};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, Claims};
use crate::Gateway;

/// Every route, as documented in `schemas/openapi.json`.
pub const ROUTES: [(&str, &str); 13] = [
    ("get", "/v1/ws"),
    ("get", "/v1/connect"),
    ("post", "/v1/events"),
    ("get", "/v1/conversations/{id}/messages"),
    ("get", "/v1/users/{id}/conversations"),
    ("put", "/v1/users/{id}/devices/{device}/push"),
    ("delete", "/v1/users/{id}/devices/{device}/push"),
    ("get", "/v1/notifications"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/app/"),
    ("get", "/app/{path}"),
    ("post", "/v1/dev/token"),
];

pub fn app(gateway: Arc<Gateway>) -> Router {
    let body_limit = gateway.config.max_frame_bytes;
    Router::new()
        .route("/v1/ws", get(crate::session::upgrade))
        .route("/v1/connect", get(connect))
        .route("/v1/events", post(post_event))
        .route("/v1/conversations/{id}/messages", get(messages))
        .route("/v1/users/{id}/conversations", get(user_conversations))
        .route(
            "/v1/users/{id}/devices/{device}/push",
            put(register_push).delete(unregister_push),
        )
        .route("/v1/notifications", get(notifications))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(crate::web::routes())
        // Every refusal is JSON with a code, the router's own too.
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; see schemas/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see schemas/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(gateway)
}

/// A query string, or a JSON 400 saying what is wrong with it (axum's own
/// rejection is plain text).
struct JsonQuery<T>(T);

impl<T, S> axum::extract::FromRequestParts<S> for JsonQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(JsonQuery(value)),
            Err(rejection) => Err(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("query string: {}", rejection.body_text()),
            )),
        }
    }
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

/// `value` if it lies in `min..=max`, else the 400 that says so (the
/// document's bounds, not a silent clamp).
#[allow(clippy::result_large_err)]
fn within(name: &str, value: usize, min: usize, max: usize) -> Result<usize, Response> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{name} must be {min}..={max}, not {value}"),
        ))
    }
}

/// The caller's claims, or the 401 to answer with.
#[allow(clippy::result_large_err)]
async fn authorize(gateway: &Gateway, headers: &HeaderMap) -> Result<Claims, Response> {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = auth::token_from(authorization, None) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            auth::AuthError::Missing.to_string(),
        ));
    };
    gateway
        .verifier
        .verify(&token)
        .await
        .map_err(|e| error(StatusCode::UNAUTHORIZED, e.code(), e.to_string()))
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// `GET /v1/connect`: the gateway this user should open its WebSocket on
/// (the access layer's strategy over the live, non-draining gateways).
async fn connect(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let claims = match authorize(&gateway, &headers).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    match gateway.registry.choose_for(&claims.sub) {
        Some(chosen) => {
            let alternatives: Vec<Value> = gateway
                .registry
                .live_gateways()
                .into_iter()
                .filter(|other| other.id != chosen.id)
                .map(|other| json!({"url": other.url, "gateway": other.id}))
                .collect();
            Json(json!({"url": chosen.url, "gateway": chosen.id,
                        "strategy": gateway.registry.strategy.as_str(),
                        "alternatives": alternatives}))
            .into_response()
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_gateway",
            "no live gateway is registered; try again in a few seconds",
        ),
    }
}

/// `POST /v1/events`: a CloudEvent in structured or binary HTTP mode, the
/// same as publishing it to `im.ingest.*`. A user token may only act as its
/// user; conversation management needs a service token.
async fn post_event(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match authorize(&gateway, &headers).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    if let Err(response) = limit_writes(&gateway, &claims) {
        return response;
    }
    let pairs = header_pairs(&headers);
    let binary = pairs
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("ce-specversion"));
    let inbound = match parse_inbound(
        &InboundMessage {
            subject: "",
            headers: &pairs,
            payload: &body,
        },
        &Limits::default(),
    ) {
        Ok(inbound) => inbound,
        Err(refusal) => {
            return error(
                StatusCode::BAD_REQUEST,
                refusal.code.as_str(),
                refusal.reason,
            )
        }
    };
    if !claims.svc {
        // A user publishes only under a source of its own: otherwise it
        // could pre-empt another user's (source, id) and make that user's
        // later send look like a duplicate of its own.
        if im_events::ids::user_of_source(&inbound.source) != Some(claims.sub.as_str()) {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "source {:?} is not {}'s; with a user token use {}{}:<device> or {}{}",
                    inbound.source,
                    claims.sub,
                    im_events::ids::DEVICE_SOURCE_PREFIX,
                    claims.sub,
                    im_events::ids::USER_SOURCE_PREFIX,
                    claims.sub
                ),
            );
        }
        let acts_as_self = inbound.command.actor() == Some(claims.sub.as_str());
        let management = matches!(
            inbound.command,
            Command::Create(_) | Command::AddMembers(_) | Command::RemoveMembers(_)
        );
        if management || !acts_as_self {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{} may only send its own events; this one needs a service token",
                    claims.sub
                ),
            );
        }
    }
    let event_type = inbound.command.type_name();
    // Keyed by its conversation: ingest partitions keep each one in order.
    let subject = im_events::subjects::keyed_ingest_subject(
        event_type,
        &im_events::ids::canonical_conversation_id(&inbound.command.conversation_id()),
    );
    let mut nats_headers = async_nats::HeaderMap::new();
    nats_headers.insert(
        "Nats-Msg-Id",
        im_events::ids::nats_msg_id(&inbound.source, &inbound.id).as_str(),
    );
    // The trace goes on under the gateway's span: a child of the W3C
    // `traceparent` header, else of the event's own trace, else a new one
    // (tracing off: the caller's trace passes on as it came).
    let parent = im_events::Trace::parse(
        header(&headers, "traceparent"),
        header(&headers, "tracestate"),
    )
    .or_else(|| inbound.trace.clone());
    let mut spans = im_runtime::trace::Spans::default();
    let trace = spans.event("gateway.event", parent.as_ref(), None, None, 1);
    let mut body = body;
    if binary {
        for (name, value) in pairs.iter().filter(|(name, _)| {
            (name.starts_with("ce-") || name == "content-type")
                && name != "ce-traceparent"
                && name != "ce-tracestate"
        }) {
            nats_headers.insert(name.as_str(), value.as_str());
        }
        if let Some(trace) = &trace {
            nats_headers.insert("ce-traceparent", trace.traceparent.as_str());
            if let Some(state) = &trace.tracestate {
                nats_headers.insert("ce-tracestate", state.as_str());
            }
        }
    } else if trace.is_some() && trace != inbound.trace {
        if let (Some(trace), Ok(mut event)) = (&trace, serde_json::from_slice::<Value>(&body)) {
            crate::set_trace(&mut event, trace);
            if let Ok(bytes) = serde_json::to_vec(&event) {
                body = bytes.into();
            }
        }
    }
    let published = gateway
        .js
        .publish_with_headers(subject.clone(), nats_headers, body)
        .await;
    let ack = match published {
        Ok(future) => future.await,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{e}; retry"),
            )
        }
    };
    match ack {
        Ok(ack) => (
            StatusCode::ACCEPTED,
            Json(json!({"id": inbound.id, "source": inbound.source, "type": event_type, "stream_seq": ack.sequence, "duplicate": ack.duplicate})),
        )
            .into_response(),
        Err(e) if im_runtime::publish::is_storage_full(&e.to_string()) => {
            let crate::Refusal {
                code,
                reason: message,
            } = crate::storage_full(&subject, &e.to_string());
            error(StatusCode::INSUFFICIENT_STORAGE, &code, message)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("{e}; retry")),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    before_seq: Option<u64>,
    limit: Option<usize>,
}

async fn messages(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonQuery(query): JsonQuery<HistoryQuery>,
) -> Response {
    let claims = match authorize(&gateway, &headers).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    let limit = match within("limit", query.limit.unwrap_or(50), 1, 500) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    if query.before_seq == Some(0) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "before_seq is exclusive and seqs start at 1: ask with before_seq >= 1, or none for the newest",
        );
    }
    let store = gateway.conversations.clone();
    let (conversation, user, service) = (id.clone(), claims.sub.clone(), claims.svc);
    let result = tokio::task::spawn_blocking(move || {
        let reader = if service {
            Reader::Service
        } else {
            Reader::User(&user)
        };
        readable_history(
            store.as_ref(),
            reader,
            &conversation,
            query.before_seq,
            limit,
        )
    })
    .await;
    match result {
        Ok(Ok(Some(messages))) => {
            Json(json!({"conversation_id": id, "messages": messages})).into_response()
        }
        Ok(Ok(None)) => error(
            StatusCode::FORBIDDEN,
            "not_member",
            format!("{} is not a member of {id}", claims.sub),
        ),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn user_conversations(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let claims = match authorize(&gateway, &headers).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    if !claims.svc && claims.sub != id {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} may only read its own conversations", claims.sub),
        );
    }
    let (users, conversations) = (gateway.users.clone(), gateway.conversations.clone());
    let result = tokio::task::spawn_blocking(move || {
        im_store::unread_summary(users.as_ref(), conversations.as_ref(), &id)
    })
    .await;
    match result {
        Ok(Ok(summary)) => {
            let items: Vec<Value> = summary
                .items
                .iter()
                .map(|row| json!({"conversation_id": row.conversation_id, "last_seq": row.last_seq, "read_seq": row.read_seq, "unread": row.unread()}))
                .collect();
            Json(json!({"items": items, "total_unread": summary.total_unread})).into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// A user token acts for its own user; a service token for anyone.
#[allow(clippy::result_large_err)]
async fn acting_for(
    gateway: &Gateway,
    headers: &HeaderMap,
    user: &str,
) -> Result<Claims, Response> {
    let claims = authorize(gateway, headers).await?;
    if !claims.svc && claims.sub != user {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} may only manage its own devices", claims.sub),
        ));
    }
    limit_writes(gateway, &claims)?;
    Ok(claims)
}

/// A user's write over HTTP takes from the same budget as its WebSocket
/// frames; past it, 429 with `Retry-After` (whole seconds, at least 1).
/// Service tokens are not limited here.
#[allow(clippy::result_large_err)]
fn limit_writes(gateway: &Gateway, claims: &Claims) -> Result<(), Response> {
    if claims.svc {
        return Ok(());
    }
    gateway.check_write(&claims.sub).map_err(|wait| {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            crate::session::rate_limited(gateway.config.messages_per_second, wait),
        );
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string()) {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    })
}

fn registration_response(error_value: crate::push_tokens::RegistrationError) -> Response {
    match error_value {
        crate::push_tokens::RegistrationError::Invalid(message) => {
            error(StatusCode::BAD_REQUEST, "bad_request", message)
        }
        crate::push_tokens::RegistrationError::Limit(message) => {
            error(StatusCode::CONFLICT, "limit_reached", message)
        }
        crate::push_tokens::RegistrationError::Unavailable(message) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    provider: String,
    token: String,
}

/// `PUT /v1/users/{id}/devices/{device}/push`: register the device's push
/// token (the same as the `register_push` frame).
async fn register_push(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((id, device)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(response) = acting_for(&gateway, &headers, &id).await {
        return response;
    }
    let body: RegisterBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("body must be {{\"provider\": …, \"token\": …}}: {e}"),
            )
        }
    };
    match gateway
        .register_push(&id, &device, &body.provider, &body.token)
        .await
    {
        Ok(registered) => Json(registered).into_response(),
        Err(e) => registration_response(e),
    }
}

/// `DELETE /v1/users/{id}/devices/{device}/push`.
async fn unregister_push(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((id, device)): Path<(String, String)>,
) -> Response {
    if let Err(response) = acting_for(&gateway, &headers, &id).await {
        return response;
    }
    match gateway.unregister_push(&id, &device).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => registration_response(e),
    }
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    user_id: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/notifications?user_id=&limit=`: the notification log, newest
/// first: everyone's for a service token, one's own for a user token.
async fn notifications(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    JsonQuery(query): JsonQuery<LogQuery>,
) -> Response {
    let claims = match authorize(&gateway, &headers).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    let user = match (&query.user_id, claims.svc) {
        (Some(user), false) if *user != claims.sub => {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{} may only read its own notifications", claims.sub),
            )
        }
        (None, false) => Some(claims.sub.clone()),
        (user, _) => user.clone(),
    };
    let limit = match within("limit", query.limit.unwrap_or(100), 1, 1000) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let store = gateway.notifications.clone();
    let result =
        tokio::task::spawn_blocking(move || store.notification_log(user.as_deref(), limit)).await;
    match result {
        Ok(Ok(records)) => {
            let items: Vec<Value> = records.iter().map(log_item).collect();
            Json(json!({"items": items})).into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// One log entry as operators read it (the device token masked).
pub fn log_item(record: &im_store::NotificationRecord) -> Value {
    let mut payload = record.payload.clone();
    if let Some(token) = payload.get("token").and_then(Value::as_str) {
        payload["token"] = json!(crate::push_tokens::mask(token));
    }
    json!({
        "id": record.id, "user_id": record.user_id, "device_id": record.device_id,
        "provider": record.provider, "conversation_id": record.conversation_id,
        "status": record.status, "attempts": record.attempts, "answer": record.answer,
        "created_at": im_events::rfc3339_ms(record.created_ms),
        "updated_at": im_events::rfc3339_ms(record.updated_ms),
        "notification": payload,
    })
}

async fn healthz(State(gateway): State<Arc<Gateway>>) -> Response {
    let state = gateway.client.connection_state();
    let ok = matches!(state, async_nats::connection::State::Connected);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"status": if ok { "ok" } else { "degraded" }, "nats": format!("{state:?}"), "gateway": gateway.config.gateway_id})))
        .into_response()
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    match &gateway.metrics {
        Some(render) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            render(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not enabled in this process",
        ),
    }
}

#[cfg(test)]
mod tests;
