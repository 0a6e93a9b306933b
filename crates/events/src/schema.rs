//! JSON Schemas of every event type's `data`, compiled once from the files in
//! `schemas/events/` (embedded at build time: the files are the one source of
//! truth, and tests check the Rust types against them).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::codes::{ErrorCode, EventError};

const SCHEMA_FILES: [(&str, &str); 14] = [
    (
        "im.message.send",
        include_str!("../../../schemas/events/im.message.send.json"),
    ),
    (
        "im.message.read",
        include_str!("../../../schemas/events/im.message.read.json"),
    ),
    (
        "im.conversation.create",
        include_str!("../../../schemas/events/im.conversation.create.json"),
    ),
    (
        "im.conversation.members.add",
        include_str!("../../../schemas/events/im.conversation.members.add.json"),
    ),
    (
        "im.conversation.members.remove",
        include_str!("../../../schemas/events/im.conversation.members.remove.json"),
    ),
    (
        "im.user.mute",
        include_str!("../../../schemas/events/im.user.mute.json"),
    ),
    (
        "im.message.edit",
        include_str!("../../../schemas/events/im.message.edit.json"),
    ),
    (
        "im.message.recall",
        include_str!("../../../schemas/events/im.message.recall.json"),
    ),
    (
        "im.message.react",
        include_str!("../../../schemas/events/im.message.react.json"),
    ),
    (
        "im.user.block",
        include_str!("../../../schemas/events/im.user.block.json"),
    ),
    (
        "im.user.unblock",
        include_str!("../../../schemas/events/im.user.unblock.json"),
    ),
    (
        "im.message.delivered",
        include_str!("../../../schemas/events/im.message.delivered.json"),
    ),
    (
        "im.message.committed",
        include_str!("../../../schemas/events/im.message.committed.json"),
    ),
    (
        "im.message.rejected",
        include_str!("../../../schemas/events/im.message.rejected.json"),
    ),
];

fn validators() -> &'static HashMap<&'static str, jsonschema::Validator> {
    static VALIDATORS: OnceLock<HashMap<&'static str, jsonschema::Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        SCHEMA_FILES
            .iter()
            .map(|(name, text)| {
                let schema: Value = serde_json::from_str(text)
                    .unwrap_or_else(|error| panic!("schema {name} is not JSON: {error}"));
                let validator = jsonschema::validator_for(&schema)
                    .unwrap_or_else(|error| panic!("schema {name} does not compile: {error}"));
                (*name, validator)
            })
            .collect()
    })
}

/// The event types that have a schema.
pub fn known_types() -> impl Iterator<Item = &'static str> {
    SCHEMA_FILES.iter().map(|(name, _)| *name)
}

/// Validate an event's `data` against its type's schema. The error names up
/// to three violations with their JSON pointers.
pub fn validate_data(event_type: &str, data: &Value) -> Result<(), EventError> {
    let Some(validator) = validators().get(event_type) else {
        return Err(EventError::new(
            ErrorCode::UnknownType,
            format!("unknown event type {event_type:?}"),
        ));
    };
    let problems: Vec<String> = validator
        .iter_errors(data)
        .take(3)
        .map(|error| {
            let path = error.instance_path.to_string();
            let at = if path.is_empty() {
                "/".to_string()
            } else {
                path
            };
            format!("at {at}: {error}")
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EventError::new(
            ErrorCode::SchemaViolation,
            format!(
                "data of {event_type} violates its schema: {}",
                problems.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests;
