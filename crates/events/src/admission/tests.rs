use super::*;
use crate::subjects::stored_partition;
use serde_json::json;

fn rules() -> Rules {
    Rules {
        max_body_bytes: 64 * 1024,
        conversation_partitions: 16,
    }
}

const PUBLISHED_MS: i64 = 1_700_000_000_000;

/// Admit `event` as published (or stored) on `subject`.
fn admit_on(subject: &str, event: &serde_json::Value) -> Result<Accepted, EventError> {
    let payload = serde_json::to_vec(event).unwrap();
    admit(
        &InboundMessage {
            subject,
            headers: &[],
            payload: &payload,
        },
        PUBLISHED_MS,
        &rules(),
    )
}

/// A keyed subject as the server stores it: in its key's partition.
fn stored_as(published: &str) -> String {
    let rest = published.strip_prefix("im.ingest.k.").unwrap();
    let key = rest.split('.').next().unwrap();
    let partition = crate::partition::nats_partition(key, rules().conversation_partitions);
    format!("im.keyed.{partition}.{rest}")
}

fn send(conversation: &str, sender: &str) -> serde_json::Value {
    json!({"specversion": "1.0", "id": "e1", "source": "urn:t", "type": "im.message.send",
           "data": {"conversation_id": conversation, "sender_id": sender, "kind": "text", "body": {"text": "hi"}, "mentions": ["b", "b", "a"]}})
}

/// Stored in another partition than its key's (published there
/// directly), a keyed event is refused: it would be ordered apart from
/// its conversation.
#[test]
fn a_keyed_event_in_another_partition_than_its_keys_is_refused() {
    let subject = crate::subjects::keyed_ingest_subject("im.message.send", "dm:a:b");
    let stored = stored_as(&subject);
    assert!(admit_on(&stored, &send("dm:a:b", "a")).is_ok());
    let (partition, _) = stored_partition(&stored).unwrap();
    let elsewhere = stored.replacen(
        &format!("im.keyed.{partition}."),
        &format!("im.keyed.{}.", (partition + 1) % 16),
        1,
    );
    let error = admit_on(&elsewhere, &send("dm:a:b", "a")).unwrap_err();
    assert_eq!(error.code, ErrorCode::SchemaViolation);
    assert!(
        error.reason.contains("belongs to partition"),
        "{}",
        error.reason
    );
}

#[test]
fn accepted_events_are_normalized_and_stamped() {
    let accepted = admit_on("im.ingest.message.send", &send("dm:b:a", "a")).unwrap();
    assert_eq!(
        accepted.payload.conversation_id(),
        "dm:a:b",
        "dm ids are put in order"
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
    let error = admit_on("im.ingest.message.send", &send("dm:a:b", "mallory")).unwrap_err();
    assert_eq!(error.code, ErrorCode::NotMember);
    let error = admit_on("im.ingest.message.send", &send("dm:a:a", "a")).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidId);
    let create = json!({"specversion": "1.0", "id": "c", "source": "urn:t", "type": "im.conversation.create",
        "data": {"conversation_id": "g:1", "kind": "direct", "members": ["a", "b", "c"]}});
    assert_eq!(
        admit_on("im.ingest.conversation.create", &create)
            .unwrap_err()
            .code,
        ErrorCode::SchemaViolation
    );
    let react = json!({"specversion": "1.0", "id": "r", "source": "urn:t", "type": "im.message.react",
        "data": {"conversation_id": "g:1", "seq": 1, "user_id": "a", "emoji": "0"}});
    assert_eq!(
        admit_on("im.ingest.message.react", &react)
            .unwrap_err()
            .code,
        ErrorCode::InvalidEmoji
    );
    let block = json!({"specversion": "1.0", "id": "b", "source": "urn:t", "type": "im.user.block",
        "data": {"user_id": "a", "blocked_user_id": "a"}});
    let error = admit_on("im.ingest.user.block", &block).unwrap_err();
    assert_eq!(error.code, ErrorCode::SchemaViolation);
    assert!(
        error.reason.contains("cannot block themselves"),
        "{}",
        error.reason
    );
    let mute = json!({"specversion": "1.0", "id": "m", "source": "urn:t", "type": "im.user.mute",
        "data": {"conversation_id": "g:1", "user_id": "a", "until": "tomorrow"}});
    assert_eq!(
        admit_on("im.ingest.user.mute", &mute).unwrap_err().code,
        ErrorCode::SchemaViolation
    );
}

#[test]
fn a_users_source_carries_only_that_users_actions() {
    let mut event = send("dm:a:b", "a");
    event["source"] = json!("urn:im:device:b:phone");
    let error = admit_on("im.ingest.message.send", &event).unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden);
    assert!(error.reason.contains("cannot act as a"), "{}", error.reason);
    let mut own = send("dm:a:b", "a");
    own["source"] = json!("urn:im:device:a:phone");
    assert!(admit_on("im.ingest.message.send", &own).is_ok());
    let create = json!({"specversion": "1.0", "id": "c", "source": "urn:im:user:a", "type": "im.conversation.create",
        "data": {"conversation_id": "g:1", "kind": "group", "members": ["a", "b"]}});
    assert_eq!(
        admit_on("im.ingest.conversation.create", &create)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
}

#[test]
fn identity_is_recovered_for_rejections() {
    let mut event = send("dm:a:b", "a");
    event["specversion"] = json!("0.3");
    let payload = serde_json::to_vec(&event).unwrap();
    let identity = identity_of(&InboundMessage {
        subject: "im.ingest.message.send",
        headers: &[],
        payload: &payload,
    });
    assert_eq!(identity.event_id.as_deref(), Some("e1"));
    assert_eq!(identity.source.as_deref(), Some("urn:t"));
    let binary = [
        ("ce-specversion".to_string(), "1.0".to_string()),
        ("ce-id".to_string(), "b1".to_string()),
        ("ce-source".to_string(), "urn:b".to_string()),
        ("ce-type".to_string(), "im.message.send".to_string()),
    ];
    let identity = identity_of(&InboundMessage {
        subject: "im.ingest.message.send",
        headers: &binary,
        payload: b"{",
    });
    assert_eq!(
        identity,
        EventIdentity {
            source: Some("urn:b".into()),
            event_id: Some("b1".into()),
            event_type: Some("im.message.send".into()),
        }
    );
}

/// The key publishers compute from an event's data is the conversation
/// it is ordered by: every inbound example, keyed as the gateway keys it
/// (a direct id out of order too), is admitted, as published and as
/// stored; keyed by another conversation, or by a key that is not hex, it
/// is refused.
#[test]
fn keyed_events_must_be_keyed_by_their_conversation() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/examples");
    let mut checked = 0;
    for event_type in crate::INBOUND_TYPES {
        let text = std::fs::read_to_string(format!("{dir}/{event_type}.json")).unwrap();
        let mut event: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(id) = event["data"]["conversation_id"].as_str() {
            if let Some((a, b)) = crate::ids::direct_members(id) {
                event["data"]["conversation_id"] = json!(format!("dm:{b}:{a}"));
            }
        }
        let subject = crate::subjects::ingest_subject_for(event_type, &event["data"]);
        assert!(subject.starts_with("im.ingest.k."), "{subject}");
        let stored = stored_as(&subject);
        for subject in [&subject, &stored] {
            if let Err(error) = admit_on(subject, &event) {
                panic!("{event_type} on {subject}: {error:?}");
            }
        }
        let elsewhere = crate::subjects::keyed_ingest_subject(event_type, "g:other");
        let error = admit_on(&elsewhere, &event).unwrap_err();
        assert_eq!(error.code, ErrorCode::SchemaViolation, "{event_type}");
        assert!(
            error.reason.contains("keyed by \"g:other\""),
            "{}",
            error.reason
        );
        let not_hex = subject.replacen("im.ingest.k.", "im.ingest.k.zz", 1);
        let error = admit_on(&not_hex, &event).unwrap_err();
        assert!(error.reason.contains("not hex"), "{}", error.reason);
        checked += 1;
    }
    assert_eq!(checked, crate::INBOUND_TYPES.len());
}

#[test]
fn admitting_twice_gives_the_same_result() {
    let event = send("dm:a:b", "a");
    assert_eq!(
        admit_on("im.ingest.message.send", &event).unwrap(),
        admit_on("im.ingest.message.send", &event).unwrap()
    );
}

#[test]
fn a_copy_names_its_original() {
    let headers = [(REKEYED_FROM.to_ascii_lowercase(), "77".to_string())];
    assert_eq!(rekeyed_from(&headers), Some(77));
    assert_eq!(rekeyed_from(&[]), None);
}
