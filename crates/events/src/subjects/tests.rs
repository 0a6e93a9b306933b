use super::*;

#[test]
fn hex_round_trips() {
    assert_eq!(unhex(&hex("alice@x.com")).as_deref(), Some("alice@x.com"));
    assert_eq!(device_key("a.b", "p"), "612e62.70");
    assert_eq!(gateway_frames_subject("gw-1"), "im.gw.gw-1.frames");
    assert_eq!(unhex("zz"), None);
}

#[test]
fn subjects_round_trip() {
    assert_eq!(ingest_subject("im.message.send"), "im.ingest.message.send");
    assert_eq!(
        type_from_ingest_subject("im.ingest.conversation.members.add").as_deref(),
        Some("im.conversation.members.add")
    );
    let keyed = keyed_ingest_subject("im.message.send", "g.1");
    assert_eq!(keyed, "im.ingest.k.672e31.message.send");
    assert_eq!(
        type_from_ingest_subject(&keyed).as_deref(),
        Some("im.message.send")
    );
    let stored = "im.keyed.3.672e31.conversation.members.add";
    assert_eq!(
        type_from_ingest_subject(stored).as_deref(),
        Some("im.conversation.members.add")
    );
    assert_eq!(ingest_key_of_subject(stored), Some(Some("g.1".into())));
    assert_eq!(
        republish_subject(stored),
        "im.ingest.k.672e31.conversation.members.add"
    );
    assert_eq!(
        republish_subject("im.ingest.user.mute"),
        "im.ingest.user.mute"
    );
    assert_eq!(ingest_key_of_subject(&keyed), Some(Some("g.1".into())));
    assert_eq!(
        ingest_key_of_subject("im.keyed.3.zz.message.send"),
        Some(None)
    );
    assert_eq!(ingest_key_of_subject("im.ingest.message.send"), None);
    // Too short to be keyed: read as an (unknown) unkeyed type.
    assert_eq!(ingest_key_of_subject("im.ingest.k.672e31"), None);
    assert_eq!(
        type_from_ingest_subject("im.ingest.k.672e31").as_deref(),
        Some("im.k.672e31")
    );
    assert_eq!(
        keyed_ingest_transform(4),
        (
            "im.ingest.k.*.>".to_string(),
            "im.keyed.{{partition(4,1)}}.{{wildcard(1)}}.>".to_string()
        )
    );
    assert_eq!(
        timeline_subject(3, "im.message.committed"),
        "im.timeline.3.message.committed"
    );
}
