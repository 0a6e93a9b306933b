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

/// The hand-written reader: from bytes and from a `Value`, attributes in
/// any order, `data` before `type`, extensions kept, unknown attributes
/// ignored, a missing attribute or a bad payload an error naming it.
#[test]
fn an_envelope_reads_as_it_was_written_in_any_order() {
    let command = Command::Read(ReadData {
        conversation_id: "c".into(),
        user_id: "u".into(),
        seq: 3,
    });
    let mut envelope = Envelope::new("urn:x", "1", rfc3339_ms(0), command.clone());
    envelope.imreceived = Some(rfc3339_ms(5));
    envelope.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    let bytes = serde_json::to_vec(&envelope).unwrap();
    assert_eq!(
        serde_json::from_slice::<Accepted>(&bytes).unwrap(),
        envelope
    );
    let reordered = json!({"data": {"conversation_id": "c", "user_id": "u", "seq": 3},
        "subject": "ignored", "type": "im.message.read", "time": rfc3339_ms(0), "id": "1",
        "imreceived": rfc3339_ms(5), "source": "urn:x", "datacontenttype": "application/json",
        "traceparent": envelope.traceparent, "specversion": "1.0"});
    assert_eq!(
        serde_json::from_value::<Accepted>(reordered.clone()).unwrap(),
        envelope
    );
    assert_eq!(
        serde_json::from_str::<Accepted>(&reordered.to_string()).unwrap(),
        envelope
    );
    let mut missing = serde_json::to_value(&envelope).unwrap();
    missing.as_object_mut().unwrap().remove("source");
    let error = serde_json::from_value::<Accepted>(missing).unwrap_err();
    assert!(error.to_string().contains("source"), "{error}");
    let mut untyped = serde_json::to_value(&envelope).unwrap();
    untyped.as_object_mut().unwrap().remove("type");
    assert!(serde_json::from_value::<Accepted>(untyped)
        .unwrap_err()
        .to_string()
        .contains("type"));
    let mut bad = serde_json::to_value(&envelope).unwrap();
    bad["data"]["seq"] = json!("three");
    assert!(serde_json::from_slice::<Accepted>(&serde_json::to_vec(&bad).unwrap()).is_err());
    let mut unknown = serde_json::to_value(&envelope).unwrap();
    unknown["type"] = json!("im.message.nonsense");
    assert!(serde_json::from_value::<Accepted>(unknown).is_err());
    assert!(serde_json::from_str::<Accepted>("[1, 2]").is_err());
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
