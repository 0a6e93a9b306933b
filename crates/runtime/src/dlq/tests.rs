use super::*;

#[test]
fn headers_keep_the_original_and_say_why() {
    let letter = DeadLetter {
        function: "ingest".into(),
        code: ErrorCode::SchemaViolation,
        reason: "line one\nline two".into(),
        original_subject: "im.ingest.message.send".into(),
        original_headers: vec![
            ("ce-id".into(), "1".into()),
            ("Nats-Msg-Id".into(), "abc".into()),
        ],
        payload: Bytes::from_static(b"{}"),
        stream: "IM_INGEST".into(),
        stream_seq: 42,
        delivered: 1,
        source: None,
        event_id: None,
        event_type: None,
    };
    let headers = dead_letter_headers(&letter, 0);
    assert_eq!(headers.get("ce-id").unwrap().as_str(), "1");
    assert!(
        headers.get("Nats-Msg-Id").is_none(),
        "the original msg id must not dedupe the dead letter"
    );
    assert_eq!(headers.get(H_ORIGINAL_MSG_ID).unwrap().as_str(), "abc");
    assert_eq!(headers.get(H_REASON).unwrap().as_str(), "line one line two");
    assert_eq!(headers.get(H_CODE).unwrap().as_str(), "schema_violation");
    assert_eq!(headers.get(H_STREAM_SEQ).unwrap().as_str(), "42");
}
