use super::*;

fn record(diffusion: im_events::Diffusion, last_seq: u64) -> im_store::ConversationRecord {
    im_store::ConversationRecord {
        conversation_id: "g:1".into(),
        kind: im_events::ConversationKind::Group,
        title: None,
        last_seq,
        diffusion,
        member_count: 3,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        history_visibility: Default::default(),
    }
}

fn marks(user: &str, read_seq: u64, delivered_seq: u64) -> im_store::Receipt {
    im_store::Receipt {
        user_id: user.into(),
        read_seq,
        delivered_seq,
    }
}

#[test]
fn receipts_list_every_member_and_a_read_counts_as_delivered() {
    let members = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let frame = receipts_frame(
        &record(im_events::Diffusion::Write, 9),
        members,
        vec![marks("a", 9, 0), marks("b", 2, 7)],
    );
    assert_eq!(
        frame["members"],
        json!([{"user_id": "a", "read_seq": 9, "delivered_seq": 9},
               {"user_id": "b", "read_seq": 2, "delivered_seq": 7},
               {"user_id": "c", "read_seq": 0, "delivered_seq": 0}])
    );
    assert!(frame.get("counts").is_none());
}

#[test]
fn large_groups_get_counts_only() {
    let frame = receipts_frame(
        &record(im_events::Diffusion::Read, 9),
        vec![],
        vec![marks("a", 9, 9), marks("b", 2, 9), marks("c", 1, 3)],
    );
    assert_eq!(frame["members"], json!([]));
    assert_eq!(
        frame["counts"],
        json!({"members": 3, "at_seq": 9, "read": 1, "delivered": 2})
    );
}

#[test]
fn a_sync_reply_keeps_the_oldest_items_that_fit_and_says_there_is_more() {
    let item = |seq: u64| {
        im_events::SyncItem::Read(im_events::ReadItem {
            conversation_id: "c".into(),
            seq,
        })
    };
    let items = |n: u64| -> Vec<(u64, String)> {
        (1..=n).map(|seq| (seq, item(seq).logged(seq))).collect()
    };
    // All fit: every item, in order, next = the last one's sync_seq.
    let all: Value = serde_json::from_str(&sync_reply(items(3), 0, false, 1 << 20)).unwrap();
    assert_eq!(all["op"], "sync_result");
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    assert_eq!(all["items"][0]["sync_seq"], 1);
    assert_eq!(all["items"][2]["type"], "read");
    assert_eq!(all["next"], 3);
    assert_eq!(all["has_more"], false);
    // A small budget: the head that fits, has_more set, next where it stopped.
    let one = items(1)[0].1.len();
    let text = sync_reply(items(100), 0, false, one * 10);
    assert!(text.len() <= one * 10 + 64, "{}", text.len());
    let page: Value = serde_json::from_str(&text).unwrap();
    let kept = page["items"].as_array().unwrap().len() as u64;
    assert!((1..100).contains(&kept), "{kept}");
    assert_eq!(page["next"], kept);
    assert_eq!(page["has_more"], true);
    // At least one item, however small the budget; none: next stays `after`.
    let tiny: Value = serde_json::from_str(&sync_reply(items(5), 0, false, 1)).unwrap();
    assert_eq!(tiny["items"].as_array().unwrap().len(), 1);
    let empty: Value = serde_json::from_str(&sync_reply(vec![], 41, false, 100)).unwrap();
    assert_eq!(
        (empty["next"].clone(), empty["has_more"].clone()),
        (json!(41), json!(false))
    );
}
