//! The store conformance suite: every backend runs these same checks.
//! Each function takes fresh, empty stores and panics on a violation.

use im_events::{ConversationKind, Diffusion, MessageKind};
use serde_json::json;

use crate::{
    readable_history, unread_summary, ConversationEffect, ConversationRecord, ConversationStore,
    Fence, IdempotencyRecord, NotificationRecord, NotificationStatus, NotificationStore,
    NotifyEffect, NotifyState, Reader, Role, StoreError, StoredMessage, SyncRecord, TieringPolicy,
    UserConversation, UserEffect, UserStore,
};

/// Every check of a conversation and user store, by name: each backend's
/// test list must run all of them or name why it leaves one out (a test in
/// each backend compares its list with this one, so a new check cannot be
/// forgotten by one backend).
pub const STORE_CHECKS: &[&str] = &[
    "conversation_round_trip",
    "membership_intervals",
    "messages_and_history",
    "history_as_members_may_read_it",
    "seq_fence_refuses_a_second_message",
    "epoch_fence_refuses_stale_owner",
    "idempotency_records",
    "edits_and_recalls",
    "replies_reactions_blocks_and_receipts",
    "user_conversations_and_unread",
    "sync_log_pages_in_order",
    "sync_log_compaction_keeps_the_head",
    "apply_is_atomic",
    "tiers_read_as_one",
    "retention_deletes_by_kind",
    "idempotency_keys_are_purged_by_age",
];

/// Every check of a notification store, by name.
pub const NOTIFICATION_CHECKS: &[&str] = &[
    "notify_states_come_due",
    "outbox_is_idempotent_and_logged",
    "notify_fence_and_atomicity",
];

/// Whether a backend's list (`run`, plus `left_out` with reasons) covers
/// `all` exactly: the names missing from it, and those it has that `all`
/// does not know.
pub fn coverage(
    all: &[&str],
    run: &[&str],
    left_out: &[(&str, &str)],
) -> (Vec<String>, Vec<String>) {
    let listed: Vec<&str> = run
        .iter()
        .copied()
        .chain(left_out.iter().map(|(name, _)| *name))
        .collect();
    let missing = all
        .iter()
        .filter(|n| !listed.contains(n))
        .map(|n| n.to_string())
        .collect();
    let unknown = listed
        .iter()
        .filter(|n| !all.contains(n))
        .map(|n| n.to_string())
        .collect();
    (missing, unknown)
}

pub fn fence(epoch: u64) -> Fence {
    Fence {
        scope: "conformance".into(),
        partition: 0,
        epoch,
    }
}

fn record(conversation_id: &str, last_seq: u64, diffusion: Diffusion) -> ConversationRecord {
    ConversationRecord {
        conversation_id: conversation_id.into(),
        kind: ConversationKind::Group,
        title: Some("Conformance".into()),
        last_seq,
        diffusion,
        member_count: 2,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        history_visibility: im_events::HistoryVisibility::Joined,
    }
}

pub fn message(conversation_id: &str, seq: u64, id: &str) -> StoredMessage {
    StoredMessage {
        conversation_id: conversation_id.into(),
        seq,
        message_id: id.into(),
        sender_id: "alice".into(),
        source: "urn:conformance".into(),
        event_id: format!("event-{id}"),
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        kind: MessageKind::Text,
        body: json!({"text": format!("message {seq}")}),
        mentions: vec!["bob".into()],
        edited_at: None,
        recalled_at: None,
        recalled_by: None,
        reply_to: None,
        reactions: vec![],
    }
}

pub fn conversation_round_trip(conversations: &dyn ConversationStore, _users: &dyn UserStore) {
    assert_eq!(conversations.conversation("g:conformance").unwrap(), None);
    let created = record("g:conformance", 0, Diffusion::Write);
    conversations
        .apply(
            &fence(1),
            &[ConversationEffect::PutConversation(created.clone())],
        )
        .unwrap();
    assert_eq!(
        conversations.conversation("g:conformance").unwrap(),
        Some(created.clone())
    );
    let advanced = record("g:conformance", 7, Diffusion::Read);
    conversations
        .apply(
            &fence(1),
            &[ConversationEffect::PutConversation(advanced.clone())],
        )
        .unwrap();
    // last_seq never moves backwards, even if a stale record is written.
    conversations
        .apply(&fence(1), &[ConversationEffect::PutConversation(created)])
        .unwrap();
    assert_eq!(
        conversations
            .conversation("g:conformance")
            .unwrap()
            .unwrap()
            .last_seq,
        7
    );
}

pub fn membership_intervals(conversations: &dyn ConversationStore, _users: &dyn UserStore) {
    let add = |user: &str, after_seq: u64, role: Role| ConversationEffect::AddMember {
        conversation_id: "g:m".into(),
        user_id: user.into(),
        role,
        after_seq,
    };
    let remove = |user: &str, after_seq: u64| ConversationEffect::RemoveMember {
        conversation_id: "g:m".into(),
        user_id: user.into(),
        after_seq,
    };
    conversations
        .apply(
            &fence(1),
            &[
                add("alice", 0, Role::Admin),
                add("bob", 0, Role::Member),
                add("carol", 2, Role::Member),
            ],
        )
        .unwrap();
    conversations.apply(&fence(1), &[remove("bob", 3)]).unwrap();
    conversations
        .apply(&fence(1), &[add("bob", 5, Role::Member)])
        .unwrap();
    assert_eq!(
        conversations.members_at("g:m", 1).unwrap(),
        vec!["alice", "bob"]
    );
    assert_eq!(
        conversations.members_at("g:m", 3).unwrap(),
        vec!["alice", "bob", "carol"]
    );
    assert_eq!(
        conversations.members_at("g:m", 4).unwrap(),
        vec!["alice", "carol"]
    );
    assert_eq!(
        conversations.members_at("g:m", 6).unwrap(),
        vec!["alice", "bob", "carol"]
    );
    assert_eq!(
        conversations.current_members("g:m").unwrap(),
        vec!["alice", "bob", "carol"]
    );
    let found = conversations
        .memberships("g:m", &["alice".into(), "mallory".into()])
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].role, Role::Admin);
    // Removed and re-added with no message in between: one open interval.
    conversations.apply(&fence(1), &[remove("bob", 5)]).unwrap();
    conversations
        .apply(&fence(1), &[add("bob", 5, Role::Member)])
        .unwrap();
    assert_eq!(
        conversations.current_members("g:m").unwrap(),
        vec!["alice", "bob", "carol"]
    );
}

pub fn messages_and_history(conversations: &dyn ConversationStore, _users: &dyn UserStore) {
    let effects: Vec<ConversationEffect> = (1..=25)
        .map(|seq| ConversationEffect::InsertMessage(message("c:h", seq, &format!("m{seq}"))))
        .collect();
    conversations.apply(&fence(1), &effects).unwrap();
    assert_eq!(
        conversations.message("c:h", 3).unwrap(),
        Some(message("c:h", 3, "m3"))
    );
    let newest = conversations.history("c:h", None, 10).unwrap();
    assert_eq!(
        newest.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (16..=25).collect::<Vec<_>>()
    );
    let older = conversations.history("c:h", Some(16), 10).unwrap();
    assert_eq!(
        older.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (6..=15).collect::<Vec<_>>()
    );
    let oldest = conversations.history("c:h", Some(6), 10).unwrap();
    assert_eq!(
        oldest.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=5).collect::<Vec<_>>()
    );
    assert!(conversations
        .history("c:h", Some(1), 10)
        .unwrap()
        .is_empty());
    assert!(conversations
        .history("c:other", None, 10)
        .unwrap()
        .is_empty());
}

pub fn history_as_members_may_read_it(
    conversations: &dyn ConversationStore,
    _users: &dyn UserStore,
) {
    let add = |conversation: &str, user: &str, after_seq: u64| ConversationEffect::AddMember {
        conversation_id: conversation.into(),
        user_id: user.into(),
        role: Role::Member,
        after_seq,
    };
    let mut shared = record("g:shared", 6, Diffusion::Write);
    shared.history_visibility = im_events::HistoryVisibility::Shared;
    let mut effects = vec![
        ConversationEffect::PutConversation(record("g:joined", 6, Diffusion::Write)),
        ConversationEffect::PutConversation(shared),
        add("g:joined", "alice", 0),
        add("g:joined", "dan", 4),
        add("g:shared", "dan", 4),
    ];
    for conversation in ["g:joined", "g:shared"] {
        effects.extend((1..=6).map(|seq| {
            ConversationEffect::InsertMessage(message(
                conversation,
                seq,
                &format!("{conversation}-{seq}"),
            ))
        }));
    }
    conversations.apply(&fence(1), &effects).unwrap();
    let seqs = |reader: Reader<'_>, conversation: &str, before: Option<u64>| {
        readable_history(conversations, reader, conversation, before, 10)
            .unwrap()
            .map(|page| page.iter().map(|m| m.seq).collect::<Vec<_>>())
    };
    assert_eq!(
        seqs(Reader::User("alice"), "g:joined", None),
        Some((1..=6).collect())
    );
    // Added after seq 4 of a `joined` conversation: 5 and 6 only, however
    // far back the page asks.
    assert_eq!(
        seqs(Reader::User("dan"), "g:joined", None),
        Some(vec![5, 6])
    );
    assert_eq!(seqs(Reader::User("dan"), "g:joined", Some(5)), Some(vec![]));
    assert_eq!(seqs(Reader::User("dan"), "g:joined", Some(3)), Some(vec![]));
    assert_eq!(
        seqs(Reader::User("dan"), "g:shared", None),
        Some((1..=6).collect())
    );
    assert_eq!(seqs(Reader::Service, "g:joined", Some(3)), Some(vec![1, 2]));
    // A non-member and a missing conversation answer alike.
    assert_eq!(seqs(Reader::User("mallory"), "g:joined", None), None);
    assert_eq!(seqs(Reader::User("mallory"), "g:missing", None), None);
}

pub fn seq_fence_refuses_a_second_message(
    conversations: &dyn ConversationStore,
    _users: &dyn UserStore,
) {
    conversations
        .apply(
            &fence(1),
            &[ConversationEffect::InsertMessage(message(
                "c:f", 1, "first",
            ))],
        )
        .unwrap();
    // The same message again is harmless.
    conversations
        .apply(
            &fence(1),
            &[ConversationEffect::InsertMessage(message(
                "c:f", 1, "first",
            ))],
        )
        .unwrap();
    let error = conversations
        .apply(
            &fence(1),
            &[ConversationEffect::InsertMessage(message(
                "c:f", 1, "second",
            ))],
        )
        .unwrap_err();
    assert!(
        matches!(error, StoreError::SeqConflict { seq: 1, .. }),
        "{error}"
    );
    assert_eq!(
        conversations.message("c:f", 1).unwrap().unwrap().message_id,
        "first"
    );
}

/// Idempotency keys older than the policy keeps are forgotten by an
/// archiver pass, and only those (embedded backend: ScyllaDB would expire
/// them by TTL).
pub fn idempotency_keys_are_purged_by_age(
    conversations: &dyn ConversationStore,
    _users: &dyn UserStore,
) {
    const DAY_MS: i64 = 86_400_000;
    let now = 100 * DAY_MS;
    let key = |id: &str, age_days: i64| IdempotencyRecord {
        source: "urn:age".into(),
        event_id: id.into(),
        conversation_id: "g:age".into(),
        seq: None,
        message_id: None,
        outputs: json!([]),
        recorded_at_ms: now - age_days * DAY_MS,
        fingerprint: "im.message.read a".into(),
    };
    let effects: Vec<ConversationEffect> = [("old", 40), ("edge", 31), ("recent", 10), ("new", 0)]
        .into_iter()
        .map(|(id, age)| ConversationEffect::RecordEvent(key(id, age)))
        .collect();
    conversations.apply(&fence(1), &effects).unwrap();
    let policy = TieringPolicy {
        keep_idempotency_ms: Some(30 * DAY_MS),
        ..TieringPolicy::default()
    };
    let report = conversations.archive(&policy, now, &mut |_| {}).unwrap();
    assert_eq!(report.keys_purged, 2);
    for (id, kept) in [
        ("old", false),
        ("edge", false),
        ("recent", true),
        ("new", true),
    ] {
        assert_eq!(
            conversations.idempotency("urn:age", id).unwrap().is_some(),
            kept,
            "{id}"
        );
    }
    let again = conversations.archive(&policy, now, &mut |_| {}).unwrap();
    assert_eq!(again.keys_purged, 0);
}

pub fn epoch_fence_refuses_stale_owner(
    conversations: &dyn ConversationStore,
    users: &dyn UserStore,
) {
    conversations
        .apply(
            &fence(5),
            &[ConversationEffect::InsertMessage(message("c:e", 1, "e1"))],
        )
        .unwrap();
    let error = conversations
        .apply(
            &fence(4),
            &[ConversationEffect::InsertMessage(message("c:e", 2, "e2"))],
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Fenced {
                current: 5,
                attempted: 4,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(conversations.message("c:e", 2).unwrap(), None);
    // Another partition is not affected.
    let other = Fence {
        partition: 1,
        ..fence(1)
    };
    conversations.apply(&other, &[]).unwrap();
    users.apply(&fence(9), &[]).unwrap();
    assert!(matches!(
        users.apply(&fence(8), &[]),
        Err(StoreError::Fenced { .. })
    ));
}

pub fn idempotency_records(conversations: &dyn ConversationStore, _users: &dyn UserStore) {
    let record = IdempotencyRecord {
        source: "urn:s".into(),
        event_id: "e1".into(),
        conversation_id: "c:i".into(),
        seq: Some(4),
        message_id: Some("m4".into()),
        outputs: json!([]),
        recorded_at_ms: 1000,
        fingerprint: "im.message.send alice".into(),
    };
    conversations
        .apply(
            &fence(1),
            &[ConversationEffect::RecordEvent(record.clone())],
        )
        .unwrap();
    let mut different = record.clone();
    different.seq = Some(5);
    conversations
        .apply(&fence(1), &[ConversationEffect::RecordEvent(different)])
        .unwrap();
    assert_eq!(
        conversations.idempotency("urn:s", "e1").unwrap(),
        Some(record)
    );
    assert_eq!(conversations.idempotency("urn:s", "e2").unwrap(), None);
    assert_eq!(conversations.idempotency("urn:s2", "e1").unwrap(), None);
}

pub fn edits_and_recalls(conversations: &dyn ConversationStore, _users: &dyn UserStore) {
    conversations
        .apply(
            &fence(1),
            &[
                ConversationEffect::InsertMessage(message("c:x", 1, "x1")),
                ConversationEffect::InsertMessage(message("c:x", 2, "x2")),
            ],
        )
        .unwrap();
    conversations
        .apply(
            &fence(1),
            &[
                ConversationEffect::EditMessage {
                    conversation_id: "c:x".into(),
                    seq: 1,
                    body: json!({"text": "edited"}),
                    edited_at: "2026-01-01T00:01:00.000Z".into(),
                },
                ConversationEffect::RecallMessage {
                    conversation_id: "c:x".into(),
                    seq: 2,
                    recalled_at: "2026-01-01T00:02:00.000Z".into(),
                    recalled_by: "alice".into(),
                },
            ],
        )
        .unwrap();
    let edited = conversations.message("c:x", 1).unwrap().unwrap();
    assert_eq!(edited.body, json!({"text": "edited"}));
    assert!(edited.edited_at.is_some());
    let recalled = conversations.message("c:x", 2).unwrap().unwrap();
    assert_eq!(recalled.recalled_by.as_deref(), Some("alice"));
    assert_eq!(recalled.body, json!({}), "a recalled body is erased");
}

/// Replies are stored with their message; reactions, blocks and receipts
/// are idempotent sets and maxima, and history shows reactions per emoji.
pub fn replies_reactions_blocks_and_receipts(
    conversations: &dyn ConversationStore,
    _users: &dyn UserStore,
) {
    let mut reply = message("c:r", 2, "r2");
    reply.reply_to = Some(1);
    let member = |user: &str| ConversationEffect::AddMember {
        conversation_id: "c:r".into(),
        user_id: user.into(),
        role: Role::Member,
        after_seq: 0,
    };
    conversations
        .apply(
            &fence(1),
            &[
                ConversationEffect::PutConversation(record("c:r", 2, Diffusion::Write)),
                member("alice"),
                member("bob"),
                ConversationEffect::InsertMessage(message("c:r", 1, "r1")),
                ConversationEffect::InsertMessage(reply),
            ],
        )
        .unwrap();
    assert_eq!(
        conversations.message("c:r", 2).unwrap().unwrap().reply_to,
        Some(1)
    );
    assert_eq!(
        conversations.message("c:r", 1).unwrap().unwrap().reply_to,
        None
    );
    let react = |seq: u64, emoji: &str, user: &str, add: bool| ConversationEffect::React {
        conversation_id: "c:r".into(),
        seq,
        emoji: emoji.into(),
        user_id: user.into(),
        add,
    };
    conversations
        .apply(
            &fence(1),
            &[
                react(1, "👍", "bob", true),
                react(1, "👍", "bob", true),
                react(1, "👍", "alice", true),
                react(1, ":tada:", "bob", true),
                react(2, "❤️", "alice", true),
                react(2, "❤️", "alice", false),
                react(2, "❤️", "carol", false),
            ],
        )
        .unwrap();
    let reactions = conversations.reactions("c:r", 1, 2).unwrap();
    let listed: Vec<(u64, &str, &str)> = reactions
        .iter()
        .map(|r| (r.seq, r.emoji.as_str(), r.user_id.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![(1, ":tada:", "bob"), (1, "👍", "alice"), (1, "👍", "bob")]
    );
    assert!(conversations.reactions("c:r", 2, 2).unwrap().is_empty());
    let page = readable_history(conversations, Reader::User("bob"), "c:r", None, 10)
        .unwrap()
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(
        page[0].reactions,
        vec![
            crate::ReactionGroup {
                emoji: ":tada:".into(),
                users: vec!["bob".into()]
            },
            crate::ReactionGroup {
                emoji: "👍".into(),
                users: vec!["alice".into(), "bob".into()]
            },
        ]
    );
    assert!(page[1].reactions.is_empty());
    assert_eq!(page[1].reply_to, Some(1));

    let block = |user: &str, other: &str, blocked: bool| ConversationEffect::Block {
        user_id: user.into(),
        blocked_user_id: other.into(),
        blocked,
    };
    conversations
        .apply(
            &fence(1),
            &[
                block("alice", "mallory", true),
                block("alice", "mallory", true),
            ],
        )
        .unwrap();
    assert!(conversations.blocked("alice", "mallory").unwrap());
    assert!(
        !conversations.blocked("mallory", "alice").unwrap(),
        "a block goes one way"
    );
    conversations
        .apply(&fence(1), &[block("alice", "mallory", false)])
        .unwrap();
    assert!(!conversations.blocked("alice", "mallory").unwrap());

    let receipt = |user: &str, read_seq: u64, delivered_seq: u64| ConversationEffect::Receipt {
        conversation_id: "c:r".into(),
        user_id: user.into(),
        read_seq,
        delivered_seq,
    };
    conversations
        .apply(
            &fence(1),
            &[
                receipt("bob", 0, 2),
                receipt("bob", 1, 1),
                receipt("alice", 2, 0),
                receipt("bob", 0, 0),
            ],
        )
        .unwrap();
    assert_eq!(
        conversations.receipts("c:r").unwrap(),
        vec![
            crate::Receipt {
                user_id: "alice".into(),
                read_seq: 2,
                delivered_seq: 0
            },
            crate::Receipt {
                user_id: "bob".into(),
                read_seq: 1,
                delivered_seq: 2
            },
        ],
        "marks only rise"
    );
    assert!(conversations.receipts("c:none").unwrap().is_empty());
    assert_eq!(
        conversations.receipt("c:r", "bob").unwrap(),
        Some(crate::Receipt {
            user_id: "bob".into(),
            read_seq: 1,
            delivered_seq: 2
        })
    );
    assert_eq!(conversations.receipt("c:r", "carol").unwrap(), None);
}

fn user_row(
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
        last_message: Some(json!({"text": "hi"})),
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
                    item: json!({"type": "message", "seq": n}),
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
    // A sync_seq cannot be taken twice.
    let again = users.apply(
        &fence(1),
        &[UserEffect::AppendSync(SyncRecord {
            user_id: "bob".into(),
            sync_seq: 30,
            event_key: "other".into(),
            item: json!({}),
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
                    item: json!({"type": "message", "seq": n}),
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
                item: json!({}),
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
                item: json!({}),
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

fn notify_state(
    user: &str,
    conversation: &str,
    partition: u32,
    pending: u64,
    due_ms: i64,
) -> NotifyState {
    NotifyState {
        user_id: user.into(),
        conversation_id: conversation.into(),
        partition,
        counted_seq: pending,
        pending,
        first_seq: 1,
        last_seq: pending,
        mentioned: false,
        due_ms,
        last_message: Some(json!({"sender_id": "alice", "kind": "text", "body": {"text": "hi"}})),
    }
}

pub fn notification(id: &str, user: &str, partition: u32, created_ms: i64) -> NotificationRecord {
    NotificationRecord {
        id: id.into(),
        user_id: user.into(),
        device_id: "phone".into(),
        provider: "webhook".into(),
        partition,
        conversation_id: "g:conformance".into(),
        payload: json!({"token": "t", "count": 1}),
        status: NotificationStatus::Queued,
        attempts: 0,
        next_attempt_ms: created_ms,
        created_ms,
        updated_ms: created_ms,
        answer: None,
    }
}

/// Pending states come due by partition and time; cleared ones never do.
pub fn notify_states_come_due(store: &dyn NotificationStore) {
    assert_eq!(store.notify_state("bob", "g:a").unwrap(), None);
    assert_eq!(store.next_wakeup_ms(3).unwrap(), None);
    let a = notify_state("bob", "g:a", 3, 2, 1_000);
    let b = notify_state("bob", "g:b", 3, 1, 500);
    let other = notify_state("carol", "g:a", 4, 1, 100);
    let mut cleared = notify_state("dave", "g:a", 3, 0, 10);
    cleared.counted_seq = 7;
    store
        .apply(
            &fence(1),
            &[
                NotifyEffect::PutState(a.clone()),
                NotifyEffect::PutState(b.clone()),
                NotifyEffect::PutState(other),
                NotifyEffect::PutState(cleared.clone()),
            ],
        )
        .unwrap();
    assert_eq!(store.notify_state("bob", "g:a").unwrap(), Some(a.clone()));
    assert_eq!(store.notify_state("dave", "g:a").unwrap(), Some(cleared));
    assert_eq!(store.due_states(3, 499, 10).unwrap(), vec![]);
    assert_eq!(
        store.due_states(3, 10_000, 10).unwrap(),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(store.due_states(3, 10_000, 1).unwrap(), vec![b.clone()]);
    assert_eq!(store.next_wakeup_ms(3).unwrap(), Some(500));
    let mut flushed = b;
    flushed.pending = 0;
    store
        .apply(&fence(1), &[NotifyEffect::PutState(flushed.clone())])
        .unwrap();
    assert_eq!(store.due_states(3, 10_000, 10).unwrap(), vec![a]);
    assert_eq!(store.notify_state("bob", "g:b").unwrap(), Some(flushed));
}

/// The outbox keeps the first copy of an id, settles attempts, and the log
/// reads newest first.
pub fn outbox_is_idempotent_and_logged(store: &dyn NotificationStore) {
    let first = notification("n1", "bob", 2, 1_000);
    let mut again = first.clone();
    again.payload = json!({"token": "other"});
    let second = notification("n2", "bob", 2, 2_000);
    let carol = notification("n3", "carol", 5, 1_500);
    store
        .apply(
            &fence(1),
            &[
                NotifyEffect::Enqueue(first.clone()),
                NotifyEffect::Enqueue(again),
                NotifyEffect::Enqueue(second.clone()),
                NotifyEffect::Enqueue(carol.clone()),
            ],
        )
        .unwrap();
    assert_eq!(store.notification("n1").unwrap(), Some(first.clone()));
    assert_eq!(
        store.ready_notifications(2, 1_999, 10).unwrap(),
        vec![first.clone()]
    );
    assert_eq!(store.next_wakeup_ms(2).unwrap(), Some(1_000));
    store
        .apply(
            &fence(1),
            &[NotifyEffect::Settle {
                id: "n1".into(),
                status: NotificationStatus::Queued,
                attempts: 1,
                next_attempt_ms: 5_000,
                answer: Some("429 slow down".into()),
                updated_ms: 1_100,
            }],
        )
        .unwrap();
    assert_eq!(
        store.ready_notifications(2, 4_000, 10).unwrap(),
        vec![second.clone()]
    );
    store
        .apply(
            &fence(1),
            &[NotifyEffect::Settle {
                id: "n2".into(),
                status: NotificationStatus::Sent,
                attempts: 1,
                next_attempt_ms: 2_000,
                answer: Some("200".into()),
                updated_ms: 2_100,
            }],
        )
        .unwrap();
    let settled = store.notification("n2").unwrap().unwrap();
    assert_eq!(settled.status, NotificationStatus::Sent);
    assert_eq!(settled.answer.as_deref(), Some("200"));
    assert_eq!(store.ready_notifications(2, 10_000, 10).unwrap().len(), 1);
    let log: Vec<String> = store
        .notification_log(Some("bob"), 10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(log, vec!["n2", "n1"]);
    let all: Vec<String> = store
        .notification_log(None, 2)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(all, vec!["n2", "n3"]);
    assert!(store
        .apply(
            &fence(1),
            &[NotifyEffect::Settle {
                id: "missing".into(),
                status: NotificationStatus::Sent,
                attempts: 1,
                next_attempt_ms: 0,
                answer: None,
                updated_ms: 0,
            }],
        )
        .is_err());
}

/// A stale owner of a user partition can write nothing, and a failed batch
/// leaves nothing behind.
pub fn notify_fence_and_atomicity(store: &dyn NotificationStore) {
    store
        .apply(
            &fence(5),
            &[NotifyEffect::Enqueue(notification("a", "bob", 0, 1))],
        )
        .unwrap();
    let stale = store.apply(
        &fence(4),
        &[NotifyEffect::Enqueue(notification("b", "bob", 0, 2))],
    );
    assert!(matches!(
        stale,
        Err(StoreError::Fenced {
            current: 5,
            attempted: 4,
            ..
        })
    ));
    assert_eq!(store.notification("b").unwrap(), None);
    let failing = store.apply(
        &fence(5),
        &[
            NotifyEffect::Enqueue(notification("c", "bob", 0, 3)),
            NotifyEffect::Settle {
                id: "missing".into(),
                status: NotificationStatus::Sent,
                attempts: 1,
                next_attempt_ms: 0,
                answer: None,
                updated_ms: 0,
            },
        ],
    );
    assert!(failing.is_err());
    assert_eq!(store.notification("c").unwrap(), None, "all or nothing");
    assert_eq!(store.dump().unwrap().len(), 1);
}

// ---- hot and cold tiers -------------------------------------------------

fn aged(conversation_id: &str, seq: u64, sent_ms: i64) -> StoredMessage {
    let mut m = message(conversation_id, seq, &format!("{conversation_id}-{seq}"));
    m.sent_at = im_events::rfc3339_ms(sent_ms);
    m
}

const DAY_MS: i64 = 24 * 3600 * 1000;
const NOW_MS: i64 = 1_800_000_000_000;

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
