use super::*;
use serde_json::json;

#[test]
fn envelope_is_a_structured_cloudevent() {
    let command = Command::Read(ReadData {
        conversation_id: "c".into(),
        user_id: "u".into(),
        seq: 3,
    });
    let envelope = Envelope::new("urn:x", "1", rfc3339_ms(0), command.clone());
    let value = serde_json::to_value(&envelope).unwrap();
    assert_eq!(value["type"], "im.message.read");
    assert_eq!(value["specversion"], "1.0");
    assert_eq!(value["data"]["seq"], 3);
    let back: Accepted = serde_json::from_value(value).unwrap();
    assert_eq!(back.payload, command);
}

#[test]
fn message_ids_are_deterministic_and_distinct() {
    assert_eq!(message_id_for("s", "1"), message_id_for("s", "1"));
    assert_ne!(message_id_for("s", "1"), message_id_for("s1", ""));
    assert_ne!(message_id_for("s", "1"), message_id_for("s", "2"));
}

#[test]
fn time_formats_round_trip() {
    let text = rfc3339_ms(1_700_000_000_123);
    assert_eq!(text, "2023-11-14T22:13:20.123Z");
    assert_eq!(parse_rfc3339_ms(&text), Some(1_700_000_000_123));
    assert_eq!(parse_rfc3339_ms("yesterday"), None);
}

#[test]
fn unknown_data_fields_are_refused() {
    let value = json!({"type": "im.message.read", "data": {"conversation_id": "c", "user_id": "u", "seq": 1, "x": 1}});
    assert!(serde_json::from_value::<Command>(value).is_err());
}
