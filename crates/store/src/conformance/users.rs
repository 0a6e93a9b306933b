//! User stores: conversation rows, unread, the sync log.

use super::*;

pub(super) fn user_row(
    user: &str,
    conversation: &str,
    last_seq: u64,
    read_seq: u64,
    diffusion: Diffusion,
) -> UserConversation {
    UserConversation {
        user_id: user.into(),
        conversation_id: conversation.into(),
        last_seq,
        read_seq,
        joined_seq: 0,
        diffusion,
        muted_until_ms: None,
        last_message: Some(super::preview("alice", "hi")),
    }
}

pub fn user_conversations_and_unread(conversations: &dyn ConversationStore, users: &dyn UserStore) {
    users
        .apply(
            &fence(1),
            &[
                UserEffect::PutUserConversation(user_row("bob", "c:1", 5, 2, Diffusion::Write)),
                UserEffect::PutUserConversation(user_row("bob", "c:2", 4, 4, Diffusion::Write)),
                UserEffect::PutUserConversation(user_row("bob", "g:big", 0, 10, Diffusion::Read)),
                UserEffect::PutUserConversation(user_row("carol", "c:1", 5, 0, Diffusion::Write)),
            ],
        )
        .unwrap();
    conversations
        .apply(
            &fence(1),
            &[ConversationEffect::PutConversation(record(
                "g:big",
                30,
                Diffusion::Read,
            ))],
        )
        .unwrap();
    let summary = unread_summary(users, conversations, "bob").unwrap();
    let unread: Vec<(String, u64)> = summary
        .items
        .iter()
        .map(|row| (row.conversation_id.clone(), row.unread()))
        .collect();
    assert_eq!(
        unread,
        vec![("c:1".into(), 3), ("c:2".into(), 0), ("g:big".into(), 20)]
    );
    assert_eq!(summary.total_unread, 23);
    users
        .apply(
            &fence(1),
            &[UserEffect::DeleteUserConversation {
                user_id: "bob".into(),
                conversation_id: "c:1".into(),
            }],
        )
        .unwrap();
    assert_eq!(
        unread_summary(users, conversations, "bob")
            .unwrap()
            .total_unread,
        20
    );
    assert_eq!(
        users
            .user_conversation("carol", "c:1")
            .unwrap()
            .unwrap()
            .unread(),
        5
    );
    assert_eq!(users.user_conversation("carol", "c:2").unwrap(), None);
}

pub fn sync_log_pages_in_order(_conversations: &dyn ConversationStore, users: &dyn UserStore) {
    assert_eq!(users.last_sync_seq("bob").unwrap(), 0);
    let effects: Vec<UserEffect> = (1..=30)
        .flat_map(|n| {
            [
                UserEffect::AppendSync(SyncRecord {
                    user_id: "bob".into(),
                    sync_seq: n,
                    event_key: format!("m:c:{n}"),
                    item: read_item(n),
                }),
                UserEffect::MarkApplied {
                    user_id: "bob".into(),
                    key: format!("m:c:{n}"),
                },
            ]
        })
        .collect();
    users.apply(&fence(1), &effects).unwrap();
    assert_eq!(users.last_sync_seq("bob").unwrap(), 30);
    assert!(users.effect_applied("bob", "m:c:7").unwrap());
    assert!(!users.effect_applied("bob", "m:c:31").unwrap());
    assert!(!users.effect_applied("carol", "m:c:7").unwrap());
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = users.sync_items("bob", after, 7).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().sync_seq;
        seen.extend(page.into_iter().map(|r| r.sync_seq));
    }
    assert_eq!(seen, (1..=30).collect::<Vec<_>>());
    // An item reads back as it was written.
    assert_eq!(users.sync_items("bob", 6, 1).unwrap()[0].item, read_item(7));
    // A sync_seq cannot be taken twice.
    let again = users.apply(
        &fence(1),
        &[UserEffect::AppendSync(SyncRecord {
            user_id: "bob".into(),
            sync_seq: 30,
            event_key: "other".into(),
            item: read_item(0),
        })],
    );
    assert!(again.is_err());
}

pub fn sync_log_compaction_keeps_the_head(
    _conversations: &dyn ConversationStore,
    users: &dyn UserStore,
) {
    let append = |from: u64, to: u64| -> Vec<UserEffect> {
        (from..=to)
            .map(|n| {
                UserEffect::AppendSync(SyncRecord {
                    user_id: "bob".into(),
                    sync_seq: n,
                    event_key: format!("m:c:{n}"),
                    item: read_item(n),
                })
            })
            .collect()
    };
    users.apply(&fence(1), &append(1, 30)).unwrap();
    let marks: Vec<UserEffect> = [5, 25]
        .iter()
        .map(|n| UserEffect::MarkApplied {
            user_id: "bob".into(),
            key: format!("m:c:{n}"),
        })
        .collect();
    users.apply(&fence(1), &marks).unwrap();
    assert_eq!(users.sync_floor("bob").unwrap(), 0);
    assert_eq!(users.compact_sync("bob", 20).unwrap(), 20);
    assert_eq!(users.sync_floor("bob").unwrap(), 20);
    let page = users.sync_items("bob", 0, 100).unwrap();
    let seqs: Vec<u64> = page.iter().map(|r| r.sync_seq).collect();
    assert_eq!(
        seqs,
        (21..=30).collect::<Vec<_>>(),
        "what is kept still pages"
    );
    assert_eq!(users.last_sync_seq("bob").unwrap(), 30);
    // The markers of compacted items went with them; the kept ones stay.
    assert!(!users.effect_applied("bob", "m:c:5").unwrap());
    assert!(users.effect_applied("bob", "m:c:25").unwrap());
    // The floor only rises.
    assert_eq!(users.compact_sync("bob", 10).unwrap(), 20);
    // Everything compacted: the head stays, and the next item takes the
    // next sync_seq, never a reused one.
    assert_eq!(users.compact_sync("bob", 30).unwrap(), 30);
    assert!(users.sync_items("bob", 0, 100).unwrap().is_empty());
    assert_eq!(users.last_sync_seq("bob").unwrap(), 30);
    users.apply(&fence(1), &append(31, 31)).unwrap();
    let page = users.sync_items("bob", 30, 100).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].sync_seq, 31);
    assert_eq!(users.sync_floor("carol").unwrap(), 0, "per user");
}

pub fn apply_is_atomic(conversations: &dyn ConversationStore, users: &dyn UserStore) {
    conversations
        .apply(
            &fence(1),
            &[ConversationEffect::InsertMessage(message("c:a", 1, "a1"))],
        )
        .unwrap();
    let result = conversations.apply(
        &fence(1),
        &[
            ConversationEffect::InsertMessage(message("c:a", 2, "a2")),
            ConversationEffect::InsertMessage(message("c:a", 1, "conflicting")),
        ],
    );
    assert!(result.is_err());
    assert_eq!(
        conversations.message("c:a", 2).unwrap(),
        None,
        "the whole batch rolled back"
    );
    users
        .apply(
            &fence(1),
            &[UserEffect::AppendSync(SyncRecord {
                user_id: "u".into(),
                sync_seq: 1,
                event_key: "k1".into(),
                item: read_item(0),
            })],
        )
        .unwrap();
    let result = users.apply(
        &fence(1),
        &[
            UserEffect::PutUserConversation(user_row("u", "c:a", 1, 0, Diffusion::Write)),
            UserEffect::AppendSync(SyncRecord {
                user_id: "u".into(),
                sync_seq: 1,
                event_key: "k2".into(),
                item: read_item(0),
            }),
        ],
    );
    assert!(result.is_err());
    assert_eq!(
        users.user_conversation("u", "c:a").unwrap(),
        None,
        "the whole batch rolled back"
    );
}

// ---- the offline function's store -------------------------------------

/// A sync item for the log checks.
pub fn read_item(seq: u64) -> im_events::SyncItem {
    im_events::SyncItem::Read(im_events::ReadItem {
        conversation_id: "c".into(),
        seq,
    })
}
