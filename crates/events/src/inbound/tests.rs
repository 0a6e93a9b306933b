use super::*;
use serde_json::json;

fn structured(value: Value) -> Result<Inbound, EventError> {
    let payload = serde_json::to_vec(&value).unwrap();
    parse_inbound(
        &InboundMessage {
            subject: "im.ingest.message.send",
            headers: &[],
            payload: &payload,
        },
        &Limits::default(),
    )
}

fn send_event() -> Value {
    json!({"specversion": "1.0", "id": "e1", "source": "urn:test", "type": "im.message.send",
           "data": {"conversation_id": "dm:a:b", "sender_id": "a", "kind": "text", "body": {"text": "hi"}}})
}

#[test]
fn structured_mode_parses() {
    let inbound = structured(send_event()).unwrap();
    assert_eq!(inbound.id, "e1");
    assert_eq!(inbound.source, "urn:test");
    assert!(matches!(inbound.command, Command::Send(_)));
}

/// The distributed-tracing extension in both modes; an invalid
/// traceparent is dropped and the event still accepted.
#[test]
fn the_trace_extension_is_read_in_both_modes() {
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut event = send_event();
    event["traceparent"] = json!(parent);
    event["tracestate"] = json!("k=v");
    let trace = structured(event.clone()).unwrap().trace.unwrap();
    assert_eq!(
        (trace.traceparent.as_str(), trace.tracestate.as_deref()),
        (parent, Some("k=v"))
    );
    event["traceparent"] = json!("not-a-trace");
    assert_eq!(structured(event).unwrap().trace, None);
    assert_eq!(structured(send_event()).unwrap().trace, None);
    let headers = vec![
        ("ce-specversion".to_string(), "1.0".to_string()),
        ("ce-id".to_string(), "b1".to_string()),
        ("ce-source".to_string(), "urn:test".to_string()),
        ("ce-type".to_string(), "im.message.read".to_string()),
        ("ce-traceparent".to_string(), parent.to_string()),
    ];
    let inbound = parse_inbound(
        &InboundMessage {
            subject: "im.ingest.message.read",
            headers: &headers,
            payload: br#"{"conversation_id":"dm:a:b","user_id":"a","seq":1}"#,
        },
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(inbound.trace.unwrap().traceparent, parent);
}

#[test]
fn binary_mode_parses() {
    let headers = vec![
        ("ce-specversion".to_string(), "1.0".to_string()),
        ("ce-id".to_string(), "b1".to_string()),
        ("ce-source".to_string(), "urn:test".to_string()),
        ("ce-type".to_string(), "im.message.read".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let payload = br#"{"conversation_id":"dm:a:b","user_id":"a","seq":1}"#;
    let inbound = parse_inbound(
        &InboundMessage {
            subject: "im.ingest.message.read",
            headers: &headers,
            payload,
        },
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(inbound.id, "b1");
    assert!(matches!(inbound.command, Command::Read(_)));
}

#[test]
fn each_bad_input_has_its_code() {
    let payload = b"not json";
    let error = parse_inbound(
        &InboundMessage {
            subject: "im.ingest.message.send",
            headers: &[],
            payload,
        },
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotJson);
    assert_eq!(
        structured(json!({"hello": 1})).unwrap_err().code,
        ErrorCode::NotCloudevent
    );
    let mut wrong_version = send_event();
    wrong_version["specversion"] = json!("0.3");
    assert_eq!(
        structured(wrong_version).unwrap_err().code,
        ErrorCode::BadSpecversion
    );
    let mut unknown = send_event();
    unknown["type"] = json!("im.message.explode");
    assert_eq!(
        structured(unknown).unwrap_err().code,
        ErrorCode::UnknownType
    );
    let mut violation = send_event();
    violation["data"]["kind"] = json!("video");
    let error = structured(violation).unwrap_err();
    assert_eq!(error.code, ErrorCode::SchemaViolation);
    assert!(error.reason.contains("/kind"), "{}", error.reason);
    let mut large = send_event();
    large["data"]["body"]["text"] = json!("x".repeat(70 * 1024));
    assert_eq!(structured(large).unwrap_err().code, ErrorCode::TooLarge);
    let mut bad_id = send_event();
    bad_id["data"]["sender_id"] = json!("has space");
    assert_eq!(
        structured(bad_id).unwrap_err().code,
        ErrorCode::SchemaViolation
    );
}

#[test]
fn subject_must_match_type() {
    let error = parse("im.ingest.message.read", &send_event()).unwrap_err();
    assert_eq!(error.code, ErrorCode::SchemaViolation);
}

/// A structured event as published on `subject`.
fn parse(subject: &str, event: &serde_json::Value) -> Result<Inbound, EventError> {
    let payload = serde_json::to_vec(event).unwrap();
    parse_inbound(
        &InboundMessage {
            subject,
            headers: &[],
            payload: &payload,
        },
        &Limits::default(),
    )
}

/// What the schema calls an integer (`6095.0`) the typed event takes;
/// a real fraction stays refused.
#[test]
fn integral_numbers_with_a_fraction_are_integers() {
    let edit = |seq: serde_json::Value| {
        let event = serde_json::json!({"specversion": "1.0", "id": "e", "source": "urn:t", "type": "im.message.edit",
            "data": {"conversation_id": "g:1", "seq": seq, "editor_id": "a", "body": {"text": "x"}}});
        parse("im.ingest.message.edit", &event)
    };
    match edit(serde_json::json!(6095.0)).map(|inbound| inbound.command) {
        Ok(Command::Edit(edit)) => assert_eq!(edit.seq, 6095),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        edit(serde_json::json!(6095.5)).unwrap_err().code,
        ErrorCode::SchemaViolation
    );
    // An extension attribute too.
    let event = serde_json::json!({"specversion": "1.0", "id": "e", "source": "urn:t", "type": "im.message.read",
        "traceno": 7.0, "data": {"conversation_id": "g:1", "seq": 1, "user_id": "a"}});
    let parsed = parse("im.ingest.message.read", &event);
    assert!(parsed.is_ok(), "{parsed:?}");
}
