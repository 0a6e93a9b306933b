use super::*;

#[test]
fn every_op_parses() {
    let frames = [
        r#"{"op":"send","conversation_id":"dm:a:b","client_msg_id":"c1","kind":"text","body":{"text":"hi"}}"#,
        r#"{"op":"sync","after":5,"limit":10}"#,
        r#"{"op":"history","conversation_id":"g:1","before_seq":9,"limit":20}"#,
        r#"{"op":"read","conversation_id":"g:1","seq":3}"#,
        r#"{"op":"conversations"}"#,
        r#"{"op":"ping"}"#,
        r#"{"op":"edit","conversation_id":"g:1","seq":1,"body":{"text":"x"}}"#,
        r#"{"op":"recall","conversation_id":"g:1","seq":1}"#,
        r#"{"op":"typing","conversation_id":"g:1"}"#,
        r#"{"op":"mute","conversation_id":"g:1","until":"2030-01-01T00:00:00Z"}"#,
        r#"{"op":"mute","conversation_id":"g:1","until":null}"#,
        r#"{"op":"delivered","sync_seq":7}"#,
        r#"{"op":"register_push","provider":"apns","token":"a1b2"}"#,
        r#"{"op":"unregister_push"}"#,
        r#"{"op":"auth","token":"t"}"#,
        r#"{"op":"send","conversation_id":"g:1","client_msg_id":"c2","kind":"text","body":{},"reply_to":1}"#,
        r#"{"op":"react","conversation_id":"g:1","seq":1,"emoji":"👍"}"#,
        r#"{"op":"unreact","conversation_id":"g:1","seq":1,"emoji":"👍"}"#,
        r#"{"op":"block","user_id":"mallory"}"#,
        r#"{"op":"unblock","user_id":"mallory"}"#,
        r#"{"op":"receipts","conversation_id":"g:1"}"#,
        r#"{"op":"presence","users":["bob"]}"#,
        r#"{"op":"presence_subscribe","users":["bob"]}"#,
        r#"{"op":"presence_unsubscribe","users":["bob"]}"#,
    ];
    let mut seen: Vec<String> = frames
        .iter()
        .map(|text| {
            serde_json::from_str::<Value>(text).unwrap()["op"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    seen.sort();
    seen.dedup();
    let mut ops: Vec<String> = OPS.iter().map(|op| op.to_string()).collect();
    ops.sort();
    assert_eq!(seen, ops, "every op in OPS is tried here");
    for text in frames {
        let frame = parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        // The derived op is serde's tag.
        let op = serde_json::from_str::<Value>(text).unwrap()["op"].clone();
        assert_eq!(frame.op(), op, "{text}");
    }
}

#[test]
fn bad_frames_get_codes() {
    assert_eq!(parse("nope").unwrap_err().code, "bad_json");
    assert_eq!(parse("{}").unwrap_err().code, "bad_frame");
    let unknown = parse(r#"{"op":"fly","client_msg_id":"c9"}"#).unwrap_err();
    assert_eq!(unknown.code, "unknown_op");
    assert_eq!(unknown.client_msg_id.as_deref(), Some("c9"));
    let missing =
        parse(r#"{"op":"send","client_msg_id":"c2","kind":"text","body":{}}"#).unwrap_err();
    assert_eq!(missing.code, "bad_frame");
    assert!(
        missing.message.contains("conversation_id"),
        "{}",
        missing.message
    );
    assert_eq!(missing.to_frame()["client_msg_id"], "c2");
    assert_eq!(
        parse(r#"{"op":"read","conversation_id":"bad id","seq":1}"#)
            .unwrap_err()
            .code,
        "bad_frame"
    );
    assert_eq!(
        parse(r#"{"op":"presence","users":[]}"#).unwrap_err().code,
        "bad_frame"
    );
    assert_eq!(
        parse(r#"{"op":"block","user_id":"a b"}"#).unwrap_err().code,
        "bad_frame"
    );
}

#[test]
fn a_pushed_frame_goes_on_as_it_came_and_names_a_messages_origin() {
    let message = r#"{"op":"message","source":"urn:im:device:alice:ph\u006fne","seq":3,"body":{"text":"hi"}}"#;
    assert_eq!(
        pushed(message.as_bytes()),
        Some(Pushed {
            text: message.to_string(),
            origin: Some("urn:im:device:alice:phone".into()),
        })
    );
    // Only a message is kept from its sending device.
    let read = r#"{"op":"read","source":"urn:im:device:alice:phone","seq":3}"#;
    assert_eq!(pushed(read.as_bytes()).unwrap().origin, None);
    let unread = r#"{"op":"unread","conversation_id":"dm:a:b","unread":2}"#;
    assert_eq!(pushed(unread.as_bytes()).unwrap().text, unread);
    // Not a frame: dropped, never forwarded.
    for bad in [
        &b"nope"[..],
        br#"{"seq":1}"#,
        br#"{"op":"message"} trailing"#,
        br#"{"op":7}"#,
        b"{\"op\":\"message\",\"x\":\"\xff\"}",
    ] {
        assert_eq!(pushed(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}
