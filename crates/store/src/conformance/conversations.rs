//! Conversation stores: records, members, messages, fences, idempotency.

use super::*;

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

/// A message id names one message, but the store does not hold it unique:
/// once the `(source, id)` key that made it is purged (`IM_KEEP_IDEMPOTENCY`),
/// a repeat of that event is applied as new, as the README says, at the
/// next seq and with the same message id. (A unique index on message ids
/// once refused that insert, and the partition stopped on it for good.)
pub fn a_repeat_after_its_key_is_purged_is_a_new_message(
    conversations: &dyn ConversationStore,
    _users: &dyn UserStore,
) {
    let first = message("c:again", 1, "m-again");
    let mut repeat = first.clone();
    repeat.seq = 2;
    conversations
        .apply(&fence(1), &[ConversationEffect::InsertMessage(first)])
        .unwrap();
    conversations
        .apply(&fence(1), &[ConversationEffect::InsertMessage(repeat)])
        .unwrap();
    for seq in [1, 2] {
        assert_eq!(
            conversations
                .message("c:again", seq)
                .unwrap()
                .unwrap()
                .message_id,
            "m-again",
            "seq {seq}"
        );
    }
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
        outputs: vec![],
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
        outputs: vec![],
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
        Some(record.clone())
    );
    assert_eq!(conversations.idempotency("urn:s", "e2").unwrap(), None);
    assert_eq!(conversations.idempotency("urn:s2", "e1").unwrap(), None);
    // Another event's record keeps the timeline events it produced.
    let read = IdempotencyRecord {
        event_id: "e3".into(),
        seq: None,
        message_id: None,
        outputs: vec![im_events::TimelineEvent::Read(im_events::ReadMarked {
            conversation_id: "c:i".into(),
            user_id: "bob".into(),
            seq: 4,
            source: "urn:s".into(),
            event_id: "e3".into(),
            receipt_to: vec!["alice".into()],
        })],
        fingerprint: "im.message.read bob".into(),
        ..record
    };
    conversations
        .apply(&fence(1), &[ConversationEffect::RecordEvent(read.clone())])
        .unwrap();
    assert_eq!(
        conversations.idempotency("urn:s", "e3").unwrap(),
        Some(read)
    );
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
