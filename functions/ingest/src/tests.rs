use super::*;
use serde_json::json;

fn config() -> Config {
    Config {
        max_body_bytes: 64 * 1024,
        conversation_partitions: 16,
    }
}

fn incoming(subject: &str, event: serde_json::Value) -> Incoming {
    Incoming {
        subject: subject.into(),
        headers: vec![],
        payload: serde_json::to_vec(&event).unwrap().into(),
        stream_seq: 1,
        delivered: 1,
        published_ms: 1_700_000_000_000,
        held_ms: 0,
    }
}

fn send(conversation: &str, sender: &str) -> serde_json::Value {
    json!({"specversion": "1.0", "id": "e1", "source": "urn:t", "type": "im.message.send",
           "data": {"conversation_id": conversation, "sender_id": sender, "kind": "text", "body": {"text": "hi"}}})
}

/// Unkeyed, an event is copied keyed by its (canonical) conversation,
/// with its headers but JetStream's, naming the original.
#[test]
fn unkeyed_events_are_copied_keyed_by_their_conversation() {
    let mut original = incoming("im.ingest.message.send", send("dm:b:a", "a"));
    original.stream_seq = 77;
    original.headers = vec![
        ("Nats-Msg-Id".into(), "the-original".into()),
        ("Im-Reply-To".into(), "im.gw.g1.reply.x.y".into()),
        ("ce-extra".into(), "kept".into()),
    ];
    let (subject, _) = route(&original, &config()).unwrap();
    assert_eq!(
        subject,
        im_events::subjects::keyed_ingest_subject("im.message.send", "dm:a:b")
    );
    let copy = rekeyed(&original, subject.clone());
    assert_eq!(copy.message_id.as_deref(), Some("rekey:77"));
    assert_eq!(copy.payload, original.payload);
    let headers = copy.headers.unwrap();
    assert!(
        headers.get("Nats-Msg-Id").is_none(),
        "JetStream's own is not copied"
    );
    assert_eq!(
        headers.get("Im-Reply-To").unwrap().as_str(),
        "im.gw.g1.reply.x.y"
    );
    assert_eq!(headers.get("ce-extra").unwrap().as_str(), "kept");
    let copied_headers: Vec<(String, String)> = headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_string()))
        })
        .collect();
    assert_eq!(rekeyed_from(&copied_headers), Some(77));
}

/// A refused unkeyed event is refused (dead-lettered), not copied; a keyed
/// one that reached ingest anyway is refused rather than copied onto
/// itself.
#[test]
fn refused_and_keyed_events_are_not_copied() {
    let refused = incoming("im.ingest.message.send", send("dm:a:b", "mallory"));
    assert_eq!(
        route(&refused, &config()).unwrap_err().code,
        ErrorCode::NotMember
    );
    let keyed = im_events::subjects::keyed_ingest_subject("im.message.send", "dm:a:b");
    let error = route(&incoming(&keyed, send("dm:a:b", "a")), &config()).unwrap_err();
    assert!(error.reason.contains("dedupe admits"), "{}", error.reason);
    let mut event = send("dm:a:b", "a");
    event["specversion"] = json!("0.3");
    let identity = identity_of(&incoming("im.ingest.message.send", event));
    assert_eq!(identity.event_id.as_deref(), Some("e1"));
}

#[test]
fn routing_twice_gives_the_same_result() {
    let message = incoming("im.ingest.message.send", send("dm:b:a", "a"));
    assert_eq!(
        route(&message, &config()).unwrap(),
        route(&message, &config()).unwrap()
    );
}
