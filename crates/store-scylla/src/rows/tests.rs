use super::*;
use serde_json::json;

fn text_of(value: &Option<CqlValue>) -> Option<String> {
    match value {
        Some(CqlValue::Text(t)) => Some(t.clone()),
        None => None,
        other => panic!("not text: {other:?}"),
    }
}

fn big_of(value: &Option<CqlValue>) -> i64 {
    match value {
        Some(CqlValue::BigInt(n)) => *n,
        other => panic!("not bigint: {other:?}"),
    }
}

fn sample() -> StoredMessage {
    StoredMessage {
        conversation_id: "g:team".into(),
        seq: 1234,
        message_id: "m-1".into(),
        sender_id: "alice".into(),
        source: "urn:x".into(),
        event_id: "e-1".into(),
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        kind: MessageKind::Image,
        body: json!({"url": "https://x/y.png", "w": 3}),
        mentions: vec!["bob".into()],
        edited_at: Some("2026-01-02T00:00:00.000Z".into()),
        recalled_at: None,
        recalled_by: None,
        reply_to: Some(1200),
        reactions: vec![],
    }
}

#[test]
fn messages_round_trip_through_values_and_rows() {
    let message = sample();
    let values = message_values(&message);
    assert_eq!(values.len(), MESSAGE_COLUMNS.split(", ").count());
    assert_eq!(big_of(&values[1]), 1, "bucket of seq 1234");
    let mentions = match &values[10] {
        Some(CqlValue::List(items)) => items
            .iter()
            .map(|v| match v {
                CqlValue::Text(t) => t.clone(),
                _ => panic!(),
            })
            .collect(),
        _ => panic!(),
    };
    let row: MessageRow = (
        text_of(&values[0]).unwrap(),
        big_of(&values[1]),
        big_of(&values[2]),
        text_of(&values[3]).unwrap(),
        text_of(&values[4]).unwrap(),
        text_of(&values[5]).unwrap(),
        text_of(&values[6]).unwrap(),
        text_of(&values[7]).unwrap(),
        text_of(&values[8]).unwrap(),
        text_of(&values[9]).unwrap(),
        Some(mentions),
        text_of(&values[11]),
        text_of(&values[12]),
        text_of(&values[13]),
        Some(big_of(&values[14])),
    );
    assert_eq!(message_from_row(row).unwrap(), message);
}

#[test]
fn unreadable_rows_are_errors_not_panics() {
    let message = sample();
    let row: MessageRow = (
        message.conversation_id.clone(),
        1,
        1,
        "m".into(),
        "a".into(),
        "s".into(),
        "e".into(),
        "t".into(),
        "hologram".into(),
        "{}".into(),
        None,
        None,
        None,
        None,
        None,
    );
    assert!(
        matches!(message_from_row(row), Err(StoreError::Backend(text)) if text.contains("hologram"))
    );
    let empty_list: MessageRow = (
        "c".into(),
        0,
        1,
        "m".into(),
        "a".into(),
        "s".into(),
        "e".into(),
        "t".into(),
        "text".into(),
        "{\"text\":\"hi\"}".into(),
        None,
        None,
        None,
        None,
        None,
    );
    assert!(
        message_from_row(empty_list).unwrap().mentions.is_empty(),
        "CQL stores an empty list as null"
    );
    let conversation: ConversationRow = (
        "c".into(),
        "secret".into(),
        None,
        0,
        "write".into(),
        0,
        "t".into(),
        None,
    );
    assert!(conversation_from_row(conversation).is_err());
}

#[test]
fn user_rows_and_states_map_both_ways() {
    let row = UserConversation {
        user_id: "bob".into(),
        conversation_id: "g:team".into(),
        last_seq: 9,
        read_seq: 4,
        joined_seq: 1,
        diffusion: Diffusion::Read,
        muted_until_ms: Some(77),
        last_message: Some(im_store::conformance::preview("alice", "hi")),
    };
    let values = user_conversation_values(&row);
    let back: UserConversationRow = (
        text_of(&values[0]).unwrap(),
        text_of(&values[1]).unwrap(),
        big_of(&values[2]),
        big_of(&values[3]),
        big_of(&values[4]),
        text_of(&values[5]).unwrap(),
        Some(big_of(&values[6])),
        text_of(&values[7]),
    );
    assert_eq!(user_conversation_from_row(back).unwrap(), row);
    let state = NotifyState {
        user_id: "bob".into(),
        conversation_id: "g".into(),
        partition: 3,
        counted_seq: 5,
        pending: 2,
        first_seq: 4,
        last_seq: 5,
        mentioned: true,
        due_ms: 1000,
        last_message: None,
    };
    assert_eq!(
        notify_state_values(&state).len(),
        NOTIFY_STATE_COLUMNS.split(", ").count()
    );
    let row: NotifyStateRow = ("bob".into(), "g".into(), 3, 5, 2, 4, 5, true, 1000, None);
    assert_eq!(notify_state_from_row(row).unwrap(), state);
    assert_eq!(day_of(1_800_000_000_000), "2027-01-15");
}
