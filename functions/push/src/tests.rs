use super::*;

#[test]
fn items_become_frames_with_their_sync_seq() {
    let item = json!({"type": "message", "conversation_id": "c", "seq": 3, "body": {"text": "hi"}});
    let frame = frame_for(Some(7), &item).unwrap();
    assert_eq!(frame["op"], "message");
    assert_eq!(frame["sync_seq"], 7);
    assert_eq!(frame["seq"], 3);
    assert!(frame.get("type").is_none());
    assert_eq!(
        frame_for(Some(8), &json!({"type": "edit", "recipients": ["a"]})).unwrap()["op"],
        "edited"
    );
    assert!(
        frame_for(Some(8), &json!({"type": "edit", "recipients": ["a"]}))
            .unwrap()
            .get("recipients")
            .is_none()
    );
    assert_eq!(
        frame_for(Some(9), &json!({"type": "recall"})).unwrap()["op"],
        "recalled"
    );
    assert_eq!(frame_for(Some(9), &json!({"type": "mystery"})), None);
}
