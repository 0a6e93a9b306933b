//! Hot and cold tiers, retention.

use super::*;

pub(super) fn aged(conversation_id: &str, seq: u64, sent_ms: i64) -> StoredMessage {
    let mut m = message(conversation_id, seq, &format!("{conversation_id}-{seq}"));
    m.sent_at = im_events::rfc3339_ms(sent_ms);
    m
}

pub(super) const DAY_MS: i64 = 24 * 3600 * 1000;
pub(super) const NOW_MS: i64 = 1_800_000_000_000;

/// Archiving moves old messages to the cold tier without changing what any
/// reader sees: history from every position, single lookups, the dump.
pub fn tiers_read_as_one(conversations: &dyn ConversationStore, _users: &dyn UserStore) {
    let mut effects = vec![ConversationEffect::PutConversation(record(
        "g:tiers",
        30,
        Diffusion::Write,
    ))];
    for seq in 1..=30u64 {
        let age = if seq <= 20 { 10 * DAY_MS } else { DAY_MS };
        effects.push(ConversationEffect::InsertMessage(aged(
            "g:tiers",
            seq,
            NOW_MS - age + seq as i64,
        )));
    }
    conversations.apply(&fence(1), &effects).unwrap();
    let before = conversations.dump().unwrap();
    let policy = TieringPolicy {
        hot_window_ms: 7 * DAY_MS,
        segment_messages: 7,
        ..TieringPolicy::default()
    };
    let mut heard = 0;
    let report = conversations
        .archive(&policy, NOW_MS, &mut |_| heard += 1)
        .unwrap();
    assert_eq!((report.moved, report.segments, report.deleted), (20, 3, 0));
    assert!(heard >= 1, "progress is reported");
    let stats = conversations.tier_stats().unwrap();
    assert_eq!(
        (stats.hot_messages, stats.cold_messages, stats.cold_segments),
        (10, 20, 3)
    );
    assert_eq!(
        conversations.dump().unwrap(),
        before,
        "the dump does not see tiers"
    );
    assert_eq!(
        conversations
            .archive(&policy, NOW_MS, &mut |_| {})
            .unwrap()
            .moved,
        0,
        "a second pass finds nothing to move"
    );
    for before_seq in 1..=31u64 {
        for limit in [1usize, 5, 13, 40] {
            let page = conversations
                .history("g:tiers", Some(before_seq), limit)
                .unwrap();
            let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
            let from = before_seq.saturating_sub(limit as u64).max(1);
            let expected: Vec<u64> = (from..before_seq).collect();
            assert_eq!(seqs, expected, "before {before_seq}, limit {limit}");
        }
    }
    let newest: Vec<u64> = conversations
        .history("g:tiers", None, 25)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(newest, (6..=30).collect::<Vec<_>>());
    let cold = conversations.message("g:tiers", 3).unwrap().unwrap();
    assert_eq!(cold.message_id, "g:tiers-3");

    // The seq fence holds in the cold tier too.
    conversations
        .apply(
            &fence(1),
            &[ConversationEffect::InsertMessage(cold.clone())],
        )
        .unwrap();
    let mut other = cold.clone();
    other.message_id = "intruder".into();
    assert!(matches!(
        conversations.apply(&fence(1), &[ConversationEffect::InsertMessage(other)]),
        Err(StoreError::SeqConflict { seq: 3, .. })
    ));

    // Edits and recalls reach archived messages.
    conversations
        .apply(
            &fence(1),
            &[
                ConversationEffect::EditMessage {
                    conversation_id: "g:tiers".into(),
                    seq: 4,
                    body: json!({"text": "edited"}),
                    edited_at: "2026-01-02T00:00:00.000Z".into(),
                },
                ConversationEffect::RecallMessage {
                    conversation_id: "g:tiers".into(),
                    seq: 5,
                    recalled_at: "2026-01-02T00:00:00.000Z".into(),
                    recalled_by: "alice".into(),
                },
            ],
        )
        .unwrap();
    let edited = conversations.message("g:tiers", 4).unwrap().unwrap();
    assert_eq!(edited.body, json!({"text": "edited"}));
    assert!(edited.edited_at.is_some());
    let recalled = conversations
        .history("g:tiers", Some(6), 1)
        .unwrap()
        .remove(0);
    assert_eq!(
        (recalled.seq, recalled.recalled_by.as_deref()),
        (5, Some("alice"))
    );
}

/// Retention deletes by conversation kind; nothing else.
pub fn retention_deletes_by_kind(conversations: &dyn ConversationStore, _users: &dyn UserStore) {
    let mut direct = record("dm:a:b", 10, Diffusion::Write);
    direct.kind = ConversationKind::Direct;
    let mut effects = vec![
        ConversationEffect::PutConversation(direct),
        ConversationEffect::PutConversation(record("g:keep", 10, Diffusion::Write)),
    ];
    for seq in 1..=10u64 {
        let age = if seq <= 4 { 40 * DAY_MS } else { DAY_MS };
        effects.push(ConversationEffect::InsertMessage(aged(
            "dm:a:b",
            seq,
            NOW_MS - age,
        )));
        effects.push(ConversationEffect::InsertMessage(aged(
            "g:keep",
            seq,
            NOW_MS - age,
        )));
    }
    conversations.apply(&fence(1), &effects).unwrap();
    let policy = TieringPolicy {
        hot_window_ms: 7 * DAY_MS,
        retain_direct_ms: Some(30 * DAY_MS),
        retain_group_ms: None,
        segment_messages: 3,
        keep_idempotency_ms: None,
    };
    conversations.archive(&policy, NOW_MS, &mut |_| {}).unwrap();
    let report = conversations
        .archive(&policy, NOW_MS + DAY_MS, &mut |_| {})
        .unwrap();
    assert_eq!(report.moved, 0);
    let direct: Vec<u64> = conversations
        .history("dm:a:b", None, 100)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(
        direct,
        (5..=10).collect::<Vec<_>>(),
        "direct messages past retention are gone"
    );
    let group: Vec<u64> = conversations
        .history("g:keep", None, 100)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(
        group,
        (1..=10).collect::<Vec<_>>(),
        "groups keep everything"
    );
}
