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
mod tests {
    use super::*;
    use crate::model::{Command, CommittedMessage, Rejected, TimelineEvent};

    fn examples() -> Vec<(String, Value)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/examples");
        let mut found: Vec<(String, Value)> = std::fs::read_dir(dir)
            .expect("schemas/examples exists")
            .map(|entry| {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                (
                    path.display().to_string(),
                    serde_json::from_str(&text).unwrap(),
                )
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Types and schemas must not drift: every example validates against its
    /// schema, parses into the Rust type, and the Rust type's serialization
    /// validates again and equals the example.
    #[test]
    fn every_example_matches_schema_and_rust_type() {
        let examples = examples();
        assert_eq!(examples.len(), SCHEMA_FILES.len(), "one example per schema");
        for (path, event) in examples {
            let event_type = event["type"].as_str().unwrap().to_string();
            let data = event["data"].clone();
            validate_data(&event_type, &data).unwrap_or_else(|e| panic!("{path}: {e}"));
            let reserialized = match event_type.as_str() {
                "im.message.committed" => {
                    let typed: CommittedMessage = serde_json::from_value(data.clone()).unwrap();
                    let value = serde_json::to_value(TimelineEvent::Committed(typed)).unwrap();
                    value["data"].clone()
                }
                "im.message.rejected" => {
                    let typed: Rejected = serde_json::from_value(data.clone()).unwrap();
                    serde_json::to_value(typed).unwrap()
                }
                _ => {
                    let tagged = serde_json::json!({"type": event_type, "data": data});
                    let typed: Command = serde_json::from_value(tagged)
                        .unwrap_or_else(|e| panic!("{path}: rust type refuses example: {e}"));
                    assert_eq!(typed.type_name(), event_type);
                    serde_json::to_value(typed).unwrap()["data"].clone()
                }
            };
            validate_data(&event_type, &reserialized)
                .unwrap_or_else(|e| panic!("{path}: serialized rust type violates schema: {e}"));
            if event_type != "im.message.committed" {
                assert_eq!(reserialized, data, "{path}: round trip changed the data");
            }
        }
    }

    #[test]
    fn violations_name_the_field() {
        let error = validate_data(
            "im.message.read",
            &serde_json::json!({"conversation_id": "c", "user_id": "u", "seq": 0}),
        )
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::SchemaViolation);
        assert!(error.reason.contains("/seq"), "{}", error.reason);
        let error = validate_data("im.nope", &serde_json::json!({})).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownType);
    }
}
