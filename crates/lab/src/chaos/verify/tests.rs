use super::*;
use serde_json::json;

fn ledger(messages: &[(&str, &str, &str, u64)]) -> Ledger {
    let mut ledger = Ledger::default();
    for (id, conversation, sender, seq) in messages {
        ledger.sent.insert(
            id.to_string(),
            (conversation.to_string(), sender.to_string()),
        );
        ledger
            .acked
            .insert(id.to_string(), (format!("m-{id}"), *seq));
    }
    ledger
}

fn notice(id: &str, first: u64, last: u64) -> Notice {
    Notice {
        notification_id: id.into(),
        user_id: "o0".into(),
        device_id: "phone".into(),
        conversation_id: "g:chaos".into(),
        count: last - first + 1,
        first_seq: first,
        last_seq: last,
    }
}

fn device() -> OfflineDevice {
    OfflineDevice {
        user: "o0".into(),
        device: "phone".into(),
        conversations: vec!["g:chaos".into()],
    }
}

fn three() -> Ledger {
    ledger(&[
        ("c0-1", "g:chaos", "c0", 1),
        ("c1-1", "g:chaos", "c1", 2),
        ("c0-2", "g:chaos", "c0", 3),
    ])
}

#[test]
fn every_acked_message_covered_once_is_clean() {
    let mut violations = Vec::new();
    let report = verify_notifications(
        &three(),
        &[device()],
        &[notice("a", 1, 2), notice("b", 3, 3), notice("b", 3, 3)],
        &mut violations,
    );
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(
        report,
        NotificationReport {
            notifications: 2,
            verified: 3,
            resent: 1,
            missing: 0
        }
    );
}

#[test]
fn a_skipped_message_and_an_overlap_are_violations() {
    let mut violations = Vec::new();
    let report = verify_notifications(
        &three(),
        &[device()],
        &[notice("a", 1, 1), notice("b", 1, 2)],
        &mut violations,
    );
    assert_eq!(report.missing, 1);
    assert!(violations
        .iter()
        .any(|v| v.contains("never notified of g:chaos seq 3")));
    assert!(violations
        .iter()
        .any(|v| v.contains("seq 1 by 2 notifications")));
}

#[test]
fn a_count_that_disagrees_with_its_range_is_a_violation() {
    let mut violations = Vec::new();
    let mut short = notice("a", 1, 3);
    short.count = 2;
    verify_notifications(&three(), &[device()], &[short], &mut violations);
    assert!(violations
        .iter()
        .any(|v| v.contains("says 2 messages for seqs 1..=3")));
}

#[test]
fn the_same_id_with_other_contents_is_a_violation() {
    let mut violations = Vec::new();
    verify_notifications(
        &three(),
        &[device()],
        &[notice("a", 1, 3), notice("a", 1, 2)],
        &mut violations,
    );
    assert!(violations.iter().any(|v| v.contains("different contents")));
}

fn item(conversation: &str, seq: u64, sender: &str, id: &str) -> Value {
    json!({"type": "message", "conversation_id": conversation, "seq": seq, "sender_id": sender, "message_id": format!("m-{id}")})
}

#[test]
fn deliveries_once_in_order_with_exact_unread_are_clean() {
    let ledger = three();
    let items = vec![
        item("g:chaos", 1, "c0", "c0-1"),
        item("g:chaos", 2, "c1", "c1-1"),
        item("g:chaos", 3, "c0", "c0-2"),
    ];
    let readback = Readback {
        user: "c1".into(),
        conversations: vec!["g:chaos".into()],
        items,
        list: json!({"items": [{"conversation_id": "g:chaos", "unread": 1}], "total_unread": 1}),
    };
    let mut violations = Vec::new();
    assert_eq!(verify_deliveries(&ledger, &[readback], &mut violations), 3);
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn a_lost_a_doubled_and_a_reordered_delivery_are_violations() {
    let ledger = three();
    let items = vec![
        item("g:chaos", 2, "c1", "c1-1"),
        item("g:chaos", 1, "c0", "c0-1"),
        item("g:chaos", 1, "c0", "c0-1"),
    ];
    let readback = Readback {
        user: "c1".into(),
        conversations: vec!["g:chaos".into()],
        items,
        list: json!({"items": [{"conversation_id": "g:chaos", "unread": 5}], "total_unread": 4}),
    };
    let mut violations = Vec::new();
    verify_deliveries(&ledger, &[readback], &mut violations);
    let all = violations.join("\n");
    assert!(all.contains("never got m-c0-2"), "{all}");
    assert!(all.contains("got message m-c0-1 2 times"), "{all}");
    assert!(all.contains("out of seq order"), "{all}");
    assert!(all.contains("unread of g:chaos is 5, expected 0"), "{all}");
    assert!(all.contains("total_unread 4 is not the sum 5"), "{all}");
}

#[test]
fn a_committed_seq_nobody_holds_an_ack_for_is_a_violation() {
    let ledger = ledger(&[("c0-1", "g:chaos", "c0", 1), ("c0-3", "g:chaos", "c0", 3)]);
    let readback = Readback {
        user: "c0".into(),
        conversations: vec!["g:chaos".into()],
        items: vec![
            item("g:chaos", 1, "c0", "c0-1"),
            item("g:chaos", 3, "c0", "c0-3"),
        ],
        list: json!({"items": [], "total_unread": 0}),
    };
    let mut violations = Vec::new();
    verify_deliveries(&ledger, &[readback], &mut violations);
    assert!(violations.iter().any(|v| v.contains("seq 2 was committed")));
}
