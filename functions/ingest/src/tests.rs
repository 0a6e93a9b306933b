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

/// A keyed subject as the server stores it: in its key's partition.
fn stored_as(published: &str) -> String {
    let rest = published.strip_prefix("im.ingest.k.").unwrap();
    let key = rest.split('.').next().unwrap();
    let partition = im_events::partition::nats_partition(key, config().conversation_partitions);
    format!("im.keyed.{partition}.{rest}")
}

/// Stored in another partition than its key's (published there
/// directly), a keyed event is refused: it would be ordered apart from
/// its conversation.
#[test]
fn a_keyed_event_in_another_partition_than_its_keys_is_refused() {
    let subject = im_events::subjects::keyed_ingest_subject("im.message.send", "dm:a:b");
    let stored = stored_as(&subject);
    assert!(decide(&incoming(&stored, send("dm:a:b", "a")), &config()).is_ok());
    let (partition, _) = im_events::subjects::stored_partition(&stored).unwrap();
    let elsewhere = stored.replacen(
        &format!("im.keyed.{partition}."),
        &format!("im.keyed.{}.", (partition + 1) % 16),
        1,
    );
    let error = decide(&incoming(&elsewhere, send("dm:a:b", "a")), &config()).unwrap_err();
    assert_eq!(error.code, ErrorCode::SchemaViolation);
    assert!(
        error.reason.contains("belongs to partition"),
        "{}",
        error.reason
    );
}

fn send(conversation: &str, sender: &str) -> serde_json::Value {
    json!({"specversion": "1.0", "id": "e1", "source": "urn:t", "type": "im.message.send",
           "data": {"conversation_id": conversation, "sender_id": sender, "kind": "text", "body": {"text": "hi"}, "mentions": ["b", "b", "a"]}})
}

#[test]
fn accepted_events_are_partitioned_and_stamped() {
    let (subject, accepted) = decide(
        &incoming("im.ingest.message.send", send("dm:b:a", "a")),
        &config(),
    )
    .unwrap();
    assert_eq!(
        accepted.payload.conversation_id(),
        "dm:a:b",
        "dm ids are put in order"
    );
    assert_eq!(
        subject,
        accepted_subject(partition_of("dm:a:b", 16), "im.message.send")
    );
    assert_eq!(
        accepted.imreceived.as_deref(),
        Some("2023-11-14T22:13:20.000Z")
    );
    let Command::Send(data) = &accepted.payload else {
        panic!()
    };
    assert_eq!(data.mentions, vec!["a", "b"]);
}

#[test]
fn stateless_checks_refuse() {
    let error = decide(
        &incoming("im.ingest.message.send", send("dm:a:b", "mallory")),
        &config(),
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotMember);
    let error = decide(
        &incoming("im.ingest.message.send", send("dm:a:a", "a")),
        &config(),
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidId);
    let create = json!({"specversion": "1.0", "id": "c", "source": "urn:t", "type": "im.conversation.create",
        "data": {"conversation_id": "g:1", "kind": "direct", "members": ["a", "b", "c"]}});
    assert_eq!(
        decide(
            &incoming("im.ingest.conversation.create", create),
            &config()
        )
        .unwrap_err()
        .code,
        ErrorCode::SchemaViolation
    );
    let react = json!({"specversion": "1.0", "id": "r", "source": "urn:t", "type": "im.message.react",
        "data": {"conversation_id": "g:1", "seq": 1, "user_id": "a", "emoji": "0"}});
    assert_eq!(
        decide(&incoming("im.ingest.message.react", react), &config())
            .unwrap_err()
            .code,
        ErrorCode::InvalidEmoji
    );
    let block = json!({"specversion": "1.0", "id": "b", "source": "urn:t", "type": "im.user.block",
        "data": {"user_id": "a", "blocked_user_id": "a"}});
    let error = decide(&incoming("im.ingest.user.block", block), &config()).unwrap_err();
    assert_eq!(error.code, ErrorCode::SchemaViolation);
    assert!(
        error.reason.contains("cannot block themselves"),
        "{}",
        error.reason
    );
    let mute = json!({"specversion": "1.0", "id": "m", "source": "urn:t", "type": "im.user.mute",
        "data": {"conversation_id": "g:1", "user_id": "a", "until": "tomorrow"}});
    assert_eq!(
        decide(&incoming("im.ingest.user.mute", mute), &config())
            .unwrap_err()
            .code,
        ErrorCode::SchemaViolation
    );
}

#[test]
fn a_users_source_carries_only_that_users_actions() {
    let mut event = send("dm:a:b", "a");
    event["source"] = json!("urn:im:device:b:phone");
    let error = decide(&incoming("im.ingest.message.send", event), &config()).unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden);
    assert!(error.reason.contains("cannot act as a"), "{}", error.reason);
    let mut own = send("dm:a:b", "a");
    own["source"] = json!("urn:im:device:a:phone");
    assert!(decide(&incoming("im.ingest.message.send", own), &config()).is_ok());
    let create = json!({"specversion": "1.0", "id": "c", "source": "urn:im:user:a", "type": "im.conversation.create",
        "data": {"conversation_id": "g:1", "kind": "group", "members": ["a", "b"]}});
    assert_eq!(
        decide(
            &incoming("im.ingest.conversation.create", create),
            &config()
        )
        .unwrap_err()
        .code,
        ErrorCode::Forbidden
    );
}

#[test]
fn identity_is_recovered_for_rejections() {
    let mut event = send("dm:a:b", "a");
    event["specversion"] = json!("0.3");
    let identity = identity_of(&incoming("im.ingest.message.send", event));
    assert_eq!(identity.event_id.as_deref(), Some("e1"));
    assert_eq!(identity.source.as_deref(), Some("urn:t"));
}

/// The key publishers compute from an event's data is the conversation
/// ingest orders it by: every inbound example, keyed as the gateway
/// keys it (a direct id out of order too), is accepted; keyed by
/// another conversation, or by a key that is not hex, it is refused.
#[test]
fn keyed_events_must_be_keyed_by_their_conversation() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/examples");
    let mut checked = 0;
    for event_type in im_events::INBOUND_TYPES {
        let text = std::fs::read_to_string(format!("{dir}/{event_type}.json")).unwrap();
        let mut event: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(id) = event["data"]["conversation_id"].as_str() {
            if let Some((a, b)) = im_events::ids::direct_members(id) {
                event["data"]["conversation_id"] = json!(format!("dm:{b}:{a}"));
            }
        }
        let subject = im_events::subjects::ingest_subject_for(event_type, &event["data"]);
        assert!(subject.starts_with("im.ingest.k."), "{subject}");
        let stored = stored_as(&subject);
        for subject in [&subject, &stored] {
            if let Err(error) = decide(&incoming(subject, event.clone()), &config()) {
                panic!("{event_type} on {subject}: {error:?}");
            }
        }
        let elsewhere = im_events::subjects::keyed_ingest_subject(event_type, "g:other");
        let error = decide(&incoming(&elsewhere, event.clone()), &config()).unwrap_err();
        assert_eq!(error.code, ErrorCode::SchemaViolation, "{event_type}");
        assert!(
            error.reason.contains("keyed by \"g:other\""),
            "{}",
            error.reason
        );
        let not_hex = subject.replacen("im.ingest.k.", "im.ingest.k.zz", 1);
        let error = decide(&incoming(&not_hex, event), &config()).unwrap_err();
        assert!(error.reason.contains("not hex"), "{}", error.reason);
        checked += 1;
    }
    assert_eq!(checked, im_events::INBOUND_TYPES.len());
}

/// Unkeyed, an event is copied keyed by its (canonical) conversation,
/// with its headers but JetStream's, naming the original; keyed, it is
/// accepted where it was read.
#[test]
fn unkeyed_events_are_copied_keyed_by_their_conversation() {
    let mut original = incoming("im.ingest.message.send", send("dm:b:a", "a"));
    original.stream_seq = 77;
    original.headers = vec![
        ("Nats-Msg-Id".into(), "the-original".into()),
        ("Im-Reply-To".into(), "im.gw.g1.reply.x.y".into()),
        ("ce-extra".into(), "kept".into()),
    ];
    let Route::Rekey { subject } = route(&original, &config()).unwrap() else {
        panic!("an unkeyed event is copied")
    };
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
    // The copy, stored keyed, is accepted like any keyed event.
    let stored = incoming(&stored_as(&subject), send("dm:b:a", "a"));
    assert!(matches!(
        route(&stored, &config()).unwrap(),
        Route::Accept { .. }
    ));
    // Refused unkeyed events are refused, not copied.
    let refused = incoming("im.ingest.message.send", send("dm:a:b", "mallory"));
    assert_eq!(
        route(&refused, &config()).unwrap_err().code,
        ErrorCode::NotMember
    );
}

#[test]
fn deciding_twice_gives_the_same_result() {
    let message = incoming("im.ingest.message.send", send("dm:a:b", "a"));
    assert_eq!(
        decide(&message, &config()).unwrap(),
        decide(&message, &config()).unwrap()
    );
}
