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
