//! Parsing an inbound NATS message into a [`Command`], in either content mode
//! of the CloudEvents NATS binding: structured (the whole event as JSON) or
//! binary (`ce-*` headers, JSON body as `data`).

use cloudevents::event::{AttributesReader, Data};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use serde_json::Value;

use crate::codes::{ErrorCode, EventError};
use crate::ids::check_id;
use crate::model::{Command, INBOUND_TYPES};
use crate::schema::validate_data;
use crate::subjects::type_from_ingest_subject;

/// The parts of a NATS message that parsing needs.
pub struct InboundMessage<'a> {
    pub subject: &'a str,
    /// Header names and values; names are matched case-insensitively.
    pub headers: &'a [(String, String)],
    pub payload: &'a [u8],
}

impl InboundMessage<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A parsed inbound event.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub source: String,
    pub id: String,
    pub time: Option<String>,
    pub command: Command,
    /// The distributed-tracing extension, if it names a valid trace.
    pub trace: Option<crate::Trace>,
}

pub struct Limits {
    /// Largest serialized message `body` (and edit body), in bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Whole events larger than this are refused before parsing.
fn max_event_bytes(limits: &Limits) -> usize {
    limits.max_body_bytes * 2 + 64 * 1024
}

pub fn parse_inbound(message: &InboundMessage<'_>, limits: &Limits) -> Result<Inbound, EventError> {
    if message.payload.len() > max_event_bytes(limits) {
        return Err(EventError::new(
            ErrorCode::TooLarge,
            format!(
                "event of {} bytes exceeds the {} byte limit",
                message.payload.len(),
                max_event_bytes(limits)
            ),
        ));
    }
    let event = match message.header("ce-specversion") {
        Some(version) => parse_binary(message, version)?,
        None => parse_structured(message.payload)?,
    };
    let event_type = event.ty().to_string();
    if !INBOUND_TYPES.contains(&event_type.as_str()) {
        return Err(EventError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown event type {event_type:?}; expected one of {}",
                INBOUND_TYPES.join(", ")
            ),
        ));
    }
    if let Some(subject_type) = type_from_ingest_subject(message.subject) {
        if subject_type != event_type {
            return Err(EventError::new(
                ErrorCode::SchemaViolation,
                format!(
                    "event type {event_type} was published on {}, which is for {subject_type}",
                    message.subject
                ),
            ));
        }
    }
    let data = match event.data() {
        Some(Data::Json(value)) => value.clone(),
        Some(Data::String(text)) => serde_json::from_str(text).map_err(|error| {
            EventError::new(
                ErrorCode::SchemaViolation,
                format!("data is not JSON: {error}"),
            )
        })?,
        Some(Data::Binary(bytes)) => serde_json::from_slice(bytes).map_err(|error| {
            EventError::new(
                ErrorCode::SchemaViolation,
                format!("data is not JSON: {error}"),
            )
        })?,
        None => {
            return Err(EventError::new(
                ErrorCode::SchemaViolation,
                format!("{event_type} has no data"),
            ))
        }
    };
    validate_data(&event_type, &data)?;
    let mut data = data;
    integral_numbers(&mut data);
    let command: Command = serde_json::from_value(
        serde_json::json!({"type": event_type, "data": data}),
    )
    .map_err(|error| {
        EventError::new(
            ErrorCode::SchemaViolation,
            format!("data of {event_type}: {error}"),
        )
    })?;
    check_body_size(&command, limits)?;
    let source = event.source().to_string();
    let id = event.id().to_string();
    if source.len() > 512 || id.len() > 512 {
        return Err(EventError::new(
            ErrorCode::InvalidId,
            "event source and id must be at most 512 bytes",
        ));
    }
    // Nats-Msg-Id joins source and id with a space: neither may hold one
    // (or any other whitespace or control character), so the pair is read
    // back one way only and no two pairs share a JetStream message id.
    for (what, value) in [("source", &source), ("id", &id)] {
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EventError::new(
                ErrorCode::InvalidId,
                format!("event {what} {value:?} must be non-empty, without spaces or control characters"),
            ));
        }
    }
    check_ids(&command)?;
    let extension = |name: &str| match event.extension(name) {
        Some(cloudevents::event::ExtensionValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    let trace = crate::Trace::parse(
        extension("traceparent").as_deref(),
        extension("tracestate").as_deref(),
    );
    Ok(Inbound {
        trace,
        source,
        id,
        time: event
            .time()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        command,
    })
}

fn parse_structured(payload: &[u8]) -> Result<Event, EventError> {
    let mut value: Value = serde_json::from_slice(payload).map_err(|error| {
        EventError::new(ErrorCode::NotJson, format!("payload is not JSON: {error}"))
    })?;
    let Some(object) = value.as_object() else {
        return Err(EventError::new(
            ErrorCode::NotCloudevent,
            "payload is JSON but not an object, so not a CloudEvent",
        ));
    };
    let Some(version) = object.get("specversion") else {
        return Err(EventError::new(
            ErrorCode::NotCloudevent,
            "payload is JSON but has no specversion, so not a CloudEvent",
        ));
    };
    if version != "1.0" {
        return Err(EventError::new(
            ErrorCode::BadSpecversion,
            format!("specversion {version} is not supported; use \"1.0\""),
        ));
    }
    for required in ["id", "source", "type"] {
        let present = object
            .get(required)
            .and_then(Value::as_str)
            .is_some_and(|text| !text.is_empty());
        if !present {
            return Err(EventError::new(
                ErrorCode::NotCloudevent,
                format!("CloudEvent attribute {required} is missing or empty"),
            ));
        }
    }
    // Extension attributes are strings, booleans or integers; `7.0` is one.
    if let Some(object) = value.as_object_mut() {
        object
            .iter_mut()
            .filter(|(name, _)| *name != "data")
            .for_each(|(_, attribute)| integral_numbers(attribute));
    }
    serde_json::from_value(value).map_err(|error| {
        EventError::new(
            ErrorCode::NotCloudevent,
            format!("not a valid CloudEvent: {error}"),
        )
    })
}

fn parse_binary(message: &InboundMessage<'_>, version: &str) -> Result<Event, EventError> {
    if version != "1.0" {
        return Err(EventError::new(
            ErrorCode::BadSpecversion,
            format!("ce-specversion {version} is not supported; use 1.0"),
        ));
    }
    let attribute = |name: &str| {
        message
            .header(name)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                EventError::new(
                    ErrorCode::NotCloudevent,
                    format!("binary-mode CloudEvent lacks header {name}"),
                )
            })
    };
    let data: Value = serde_json::from_slice(message.payload).map_err(|error| {
        EventError::new(
            ErrorCode::NotJson,
            format!("binary-mode body is not JSON: {error}"),
        )
    })?;
    let mut builder = EventBuilderV10::new()
        .id(attribute("ce-id")?)
        .source(attribute("ce-source")?)
        .ty(attribute("ce-type")?)
        .data("application/json", data);
    if let Some(time) = message.header("ce-time") {
        builder = builder.time(time.to_string());
    }
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = message.header(&format!("ce-{name}")) {
            builder = builder.extension(name, value.to_string());
        }
    }
    builder.build().map_err(|error| {
        EventError::new(
            ErrorCode::NotCloudevent,
            format!("not a valid CloudEvent: {error}"),
        )
    })
}

fn check_body_size(command: &Command, limits: &Limits) -> Result<(), EventError> {
    let body = match command {
        Command::Send(send) => &send.body,
        Command::Edit(edit) => &edit.body,
        _ => return Ok(()),
    };
    let size = serde_json::to_vec(body)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    if size > limits.max_body_bytes {
        return Err(EventError::new(
            ErrorCode::TooLarge,
            format!(
                "message body of {size} bytes exceeds the {} byte limit",
                limits.max_body_bytes
            ),
        ));
    }
    Ok(())
}

/// The schema already enforces the id pattern; this repeats it in code so a
/// schema edit cannot silently let bad ids through.
fn check_ids(command: &Command) -> Result<(), EventError> {
    check_id("conversation_id", &command.conversation_id())?;
    if let Some(actor) = command.actor() {
        check_id("user id", actor)?;
    }
    let members = match command {
        // (Whether a reaction is an emoji is ingest's to say: the schema
        // cannot, and what the schema takes the gateway stores.)
        Command::React(_) => return Ok(()),
        Command::Block(block) | Command::Unblock(block) => {
            // (Blocking oneself is well-formed; ingest refuses it.)
            return check_id("blocked_user_id", &block.blocked_user_id);
        }
        Command::Create(create) => &create.members,
        Command::AddMembers(change) | Command::RemoveMembers(change) => &change.members,
        _ => return Ok(()),
    };
    members
        .iter()
        .try_for_each(|member| check_id("member", member))
}

/// JSON Schema counts `6095.0` as an integer, serde's integers do not: an
/// integral number written with a fraction becomes the integer it is, so
/// what the schema accepts the typed event accepts too.
fn integral_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(number) if number.is_f64() => {
            if let Some(float) = number.as_f64() {
                if float.fract() == 0.0 && float.abs() < 9.007_199_254_740_992e15 {
                    *value = if float < 0.0 {
                        Value::from(float as i64)
                    } else {
                        Value::from(float as u64)
                    };
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
