use super::*;
use crate::{Diffusion, MessageKind};
use serde_json::json;

fn committed(seq: u64) -> CommittedMessage {
    CommittedMessage {
        message_id: "m1".into(),
        conversation_id: "g:1".into(),
        seq,
        sender_id: "alice".into(),
        source: "urn:im:user:alice:device:d".into(),
        event_id: "e1".into(),
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        kind: MessageKind::Text,
        body: json!({"text": "hi"}),
        mentions: vec![],
        diffusion: Diffusion::Write,
        reply_to: None,
    }
}

#[test]
fn a_message_item_is_the_committed_message_under_its_type() {
    let item = SyncItem::from(committed(3));
    let value = serde_json::to_value(&item).unwrap();
    assert_eq!(value["type"], "message");
    assert_eq!(value["seq"], 3);
    assert_eq!(value["body"]["text"], "hi");
    assert!(value.get("edited_at").is_none());
    assert_eq!(
        serde_json::from_value::<SyncItem>(value.clone()).unwrap(),
        item
    );
    let logged: serde_json::Value = serde_json::from_str(&item.logged(7)).unwrap();
    assert_eq!(logged["sync_seq"], 7);
    let mut expected = value;
    expected["sync_seq"] = json!(7);
    assert_eq!(logged, expected, "the item's fields and its sync_seq");
}

#[test]
fn items_stored_by_earlier_versions_still_read() {
    // A message copied into the log by read diffusion, as earlier versions
    // wrote it: the stored row's fields, nulls included.
    let stored = json!({"type": "message", "conversation_id": "g:1", "seq": 4, "message_id": "m4",
        "sender_id": "bob", "source": "urn:s", "event_id": "e4", "sent_at": "2026-01-01T00:00:00.000Z",
        "kind": "text", "body": {"text": "yo"}, "mentions": [], "edited_at": null,
        "recalled_at": "2026-01-02T00:00:00.000Z", "recalled_by": "bob", "diffusion": "read"});
    let SyncItem::Message(message) = serde_json::from_value::<SyncItem>(stored).unwrap() else {
        panic!("not a message");
    };
    assert_eq!(message.message.diffusion, Diffusion::Read);
    assert_eq!(message.recalled_by.as_deref(), Some("bob"));
    let read = serde_json::from_value::<SyncItem>(
        json!({"type": "read", "conversation_id": "c", "seq": 2}),
    );
    assert_eq!(
        read.unwrap(),
        SyncItem::Read(ReadItem {
            conversation_id: "c".into(),
            seq: 2
        })
    );
}

#[test]
fn an_unknown_item_type_is_an_error_not_a_guess() {
    let error = serde_json::from_value::<SyncItem>(json!({"type": "mystery", "seq": 1}));
    assert!(error.is_err());
}

#[test]
fn a_pushed_frame_names_its_op_and_drops_type_and_recipients() {
    let frame = SyncItem::from(committed(3)).frame(Some(8));
    assert_eq!(frame["op"], "message");
    assert_eq!(frame["sync_seq"], 8);
    assert!(frame.get("type").is_none());
    let edit = SyncItem::Edit(MessageEdited {
        recipients: vec!["a".into()],
        conversation_id: "c".into(),
        seq: 3,
        message_id: "m".into(),
        editor_id: "a".into(),
        body: json!({"text": "x"}),
        edited_at: "t".into(),
        source: "s".into(),
        event_id: "e".into(),
    });
    let frame = edit.frame(None);
    assert_eq!(frame["op"], "edited");
    assert!(frame.get("recipients").is_none());
    assert!(frame.get("sync_seq").is_none());
    let receipt = SyncItem::Receipt(ReceiptItem {
        conversation_id: "c".into(),
        user_id: "b".into(),
        read_seq: Some(4),
        delivered_seq: None,
    });
    assert_eq!(
        receipt.frame(None),
        json!({"op": "receipt", "conversation_id": "c", "user_id": "b", "read_seq": 4})
    );
}

#[test]
fn a_notice_round_trips_and_a_bad_one_is_an_error() {
    let notice = PushNotice {
        user_id: "bob".into(),
        sync_seq: Some(2),
        item: SyncItem::Read(ReadItem {
            conversation_id: "c".into(),
            seq: 2,
        }),
        trace: None,
        counted: true,
        unread: Some(UnreadCounts {
            unread: 0,
            total: 3,
            as_of: 2,
        }),
    };
    let text = serde_json::to_string(&vec![notice.clone()]).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<PushNotice>>(&text).unwrap(),
        vec![notice]
    );
    assert!(serde_json::from_str::<Vec<PushNotice>>(r#"[{"user_id": "bob"}]"#).is_err());
    // An older unread's notice (no counts) reads as not counted.
    let older = r#"[{"user_id": "bob", "sync_seq": 2, "item": {"type": "read", "conversation_id": "c", "seq": 2}}]"#;
    let read = serde_json::from_str::<Vec<PushNotice>>(older).unwrap();
    assert!(!read[0].counted && read[0].unread.is_none());
}
