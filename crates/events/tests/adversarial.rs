//! Property tests of the inbound CloudEvent parser against adversarial
//! input, both content modes (the fuzzing of issue 13: `PROPTEST_CASES`
//! cases per property, 4,096 by default here). The parser must never
//! panic, and whatever it accepts must be safe to build on.

use im_events::inbound::{parse_inbound, Inbound, InboundMessage, Limits};
use proptest::prelude::*;
use serde_json::json;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(im_events::testing::property_cases())
}

/// Strings the way an attacker picks them: separators of our own formats,
/// whitespace, unicode, long runs.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        "[ :.@_\\-a-z0-9]{0,16}",
        "\\PC{0,12}",
        Just(String::new()),
        Just("urn:im:device:bob:phone".to_string()),
        Just("x".repeat(600)),
        "[\\x00-\\x1f ]{1,4}",
    ]
}

fn event_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("im.message.send".to_string()),
        Just("im.message.read".to_string()),
        Just("im.conversation.create".to_string()),
        Just("im.message.edit".to_string()),
        hostile(),
    ]
}

/// The invariants of anything accepted: its JetStream message id reads
/// back as exactly its (source, id), so no two pairs share one.
fn check_accepted(inbound: &Inbound) {
    assert!(!inbound.source.is_empty() && !inbound.id.is_empty());
    assert!(!inbound.source.contains(' ') && !inbound.id.contains(' '));
    let joined = im_events::ids::nats_msg_id(&inbound.source, &inbound.id);
    assert_eq!(
        joined.split_once(' '),
        Some((inbound.source.as_str(), inbound.id.as_str()))
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let message = InboundMessage { subject: "im.ingest.message.send", headers: &[], payload: &payload };
        let _ = parse_inbound(&message, &Limits::default());
    }

    #[test]
    fn structured_events_with_hostile_fields(
        source in hostile(), id in hostile(), ty in event_type(),
        conversation in hostile(), sender in hostile(), text in hostile(),
        extra in prop::option::of(hostile()),
    ) {
        let mut event = json!({"specversion": "1.0", "id": id, "source": source, "type": ty,
            "datacontenttype": "application/json",
            "data": {"conversation_id": conversation, "sender_id": sender, "kind": "text", "body": {"text": text}}});
        if let Some(extra) = extra {
            event["data"][extra] = json!(1);
        }
        let payload = event.to_string();
        let message = InboundMessage { subject: "", headers: &[], payload: payload.as_bytes() };
        if let Ok(inbound) = parse_inbound(&message, &Limits::default()) {
            check_accepted(&inbound);
        }
    }

    #[test]
    fn binary_events_with_hostile_headers(
        source in hostile(), id in hostile(), ty in event_type(),
        headers in prop::collection::vec((hostile(), hostile()), 0..6),
        body in hostile(),
    ) {
        let mut all = vec![
            ("ce-specversion".to_string(), "1.0".to_string()),
            ("ce-id".to_string(), id),
            ("ce-source".to_string(), source),
            ("ce-type".to_string(), ty),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        all.extend(headers.into_iter().map(|(name, value)| (format!("ce-{name}"), value)));
        let payload = json!({"conversation_id": "dm:a:b", "sender_id": "a", "kind": "text", "body": {"text": body}}).to_string();
        let message = InboundMessage { subject: "", headers: &all, payload: payload.as_bytes() };
        if let Ok(inbound) = parse_inbound(&message, &Limits::default()) {
            check_accepted(&inbound);
        }
    }

    /// A device source names its user one way only, whatever ids come in.
    #[test]
    fn device_sources_are_unambiguous(user in hostile(), device in hostile()) {
        if let Ok(source) = im_events::ids::device_source(&user, &device) {
            prop_assert_eq!(im_events::ids::user_of_source(&source), Some(user.as_str()));
            prop_assert!(!user.contains(':') && !device.contains(':'));
        }
    }
}

/// The collision the check closes: before, an id or a source with a space
/// gave another pair's JetStream message id (`urn:x` + `y z` and `urn:x y`
/// + `z` are both `urn:x y z`).
#[test]
fn sources_and_ids_with_spaces_are_refused() {
    let event = |source: &str, id: &str| {
        json!({"specversion": "1.0", "id": id, "source": source, "type": "im.message.send",
               "data": {"conversation_id": "dm:a:b", "sender_id": "a", "kind": "text", "body": {"text": "x"}}})
        .to_string()
    };
    for (source, id) in [("urn:x", "y z"), ("urn:x y", "z"), ("urn:x", "\t")] {
        let payload = event(source, id);
        let message = InboundMessage {
            subject: "",
            headers: &[],
            payload: payload.as_bytes(),
        };
        let refused = parse_inbound(&message, &Limits::default()).unwrap_err();
        assert_eq!(
            refused.code,
            im_events::ErrorCode::InvalidId,
            "{source:?} {id:?}"
        );
    }
}
