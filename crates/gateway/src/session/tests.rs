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
