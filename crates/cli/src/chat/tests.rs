use super::*;

#[test]
fn a_message_is_shown_once_however_often_it_is_pushed() {
    let mut shown = Shown::default();
    let fast = json!({"op": "message", "message_id": "m1", "seq": 3});
    let durable = json!({"op": "message", "message_id": "m1", "seq": 3, "sync_seq": 9});
    assert!(shown.first_time(&fast));
    assert!(!shown.first_time(&durable));
    assert!(shown.first_time(&json!({"op": "message", "message_id": "m2"})));
    assert!(shown.first_time(&json!({"op": "unread"})));
}

#[test]
fn frames_render_as_lines() {
    let message = json!({"op": "message", "conversation_id": "dm:a:b", "sender_id": "a", "seq": 3, "body": {"text": "hi"}});
    assert_eq!(render(&message).unwrap(), "[dm:a:b] a: hi (#3)");
    let list = json!({"op": "conversations_result", "total_unread": 2, "items": [{"conversation_id": "g:1", "unread": 2, "last_seq": 9}]});
    assert!(render(&list).unwrap().contains("g:1"));
    assert_eq!(render(&json!({"op": "pong"})), None);
    let recalled = json!({"op": "history_result", "messages": [{"seq": 1, "sender_id": "a", "recalled_at": "t", "body": {}}]});
    assert!(render(&recalled).unwrap().contains("(recalled)"));
    let page = json!({"op": "history_result", "messages": [{"seq": 2, "sender_id": "b", "reply_to": 1, "body": {"text": "yes"},
                      "reactions": [{"emoji": "👍", "users": ["a", "c"]}]}]});
    assert_eq!(render(&page).unwrap(), "  #2 b: ↪#1 yes  [👍 2]");
    let receipt =
        json!({"op": "receipt", "conversation_id": "dm:a:b", "user_id": "b", "read_seq": 4});
    assert_eq!(render(&receipt).unwrap(), "[dm:a:b] b read up to #4");
    let presence = json!({"op": "presence", "user_id": "b", "online": false, "last_seen": "2026-12-01T10:00:00.000Z"});
    assert_eq!(
        render(&presence).unwrap(),
        "b is offline (last seen 2026-12-01T10:00:00.000Z)"
    );
    let reacted =
        json!({"op": "reacted", "conversation_id": "g:1", "user_id": "c", "emoji": "🎉", "seq": 5});
    assert_eq!(render(&reacted).unwrap(), "[g:1] c reacted 🎉 on #5");
}

#[test]
fn older_unread_counts_are_not_shown_after_newer_ones() {
    let mut fresh = Fresh::default();
    let answer = json!({"op": "unread", "conversation_id": "g:1", "unread": 2, "as_of": 9});
    let late = json!({"op": "unread", "conversation_id": "g:1", "unread": 5, "as_of": 7});
    assert!(fresh.keep(&answer));
    assert!(!fresh.keep(&late), "a lagging push does not undo the read");
    assert!(fresh.keep(&json!({"op": "unread", "conversation_id": "g:2", "unread": 1, "as_of": 1})));
    assert!(fresh.keep(&json!({"op": "message", "conversation_id": "g:1", "as_of": 1})));
}

#[test]
fn a_direct_conversation_has_one_other_member() {
    assert_eq!(peer_of("dm:alice:bob", "bob").as_deref(), Some("alice"));
    assert_eq!(peer_of("dm:alice:bob", "alice").as_deref(), Some("bob"));
    assert_eq!(peer_of("g:team", "bob"), None);
}
