//! Unit tests of the pure core: no server, no store but an in-memory one.

use super::*;
use im_events::{CommittedMessage, Diffusion, MessageKind, ReadMarked};

fn message(seq: u64, sender: &str, mentions: &[&str]) -> TimelineEvent {
    TimelineEvent::Committed(CommittedMessage {
        message_id: format!("m{seq}"),
        conversation_id: "g:team".into(),
        seq,
        sender_id: sender.into(),
        source: "urn:test".into(),
        event_id: format!("e{seq}"),
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        kind: MessageKind::Text,
        body: json!({"text": format!("hello {seq}")}),
        mentions: mentions.iter().map(|m| m.to_string()).collect(),
        diffusion: Diffusion::Write,
        reply_to: None,
    })
}

fn read(seq: u64, user: &str) -> TimelineEvent {
    TimelineEvent::Read(ReadMarked {
        conversation_id: "g:team".into(),
        user_id: user.into(),
        seq,
        source: "urn:test".into(),
        event_id: format!("r{seq}"),
        receipt_to: vec![],
    })
}

const NOW: i64 = 1_800_000_000_000;

fn settings() -> Settings {
    Settings {
        window_ms: 1_000,
        ..Settings::default()
    }
}

/// Apply events in order, as the batch loop does.
fn run(events: &[TimelineEvent]) -> Option<NotifyState> {
    let mut state: Option<NotifyState> = None;
    for event in events {
        if let Some(next) = accumulate(state.as_ref(), "bob", 3, event, NOW, NOW, &settings()) {
            state = Some(next);
        }
    }
    state
}

#[test]
fn a_burst_accumulates_into_one_pending_state() {
    let events: Vec<_> = (1..=20).map(|seq| message(seq, "alice", &[])).collect();
    let state = run(&events).unwrap();
    assert_eq!(state.pending, 20);
    assert_eq!(
        (state.first_seq, state.last_seq, state.counted_seq),
        (1, 20, 20)
    );
    assert_eq!(
        state.due_ms,
        NOW + 1_000,
        "due one window after the first message"
    );
    assert_eq!(state.partition, 3);
    assert!(!state.mentioned);
}

#[test]
fn redelivery_and_replay_change_nothing() {
    let first = run(&[message(1, "alice", &[]), message(2, "alice", &[])]).unwrap();
    for seq in [1, 2] {
        assert_eq!(
            accumulate(
                Some(&first),
                "bob",
                3,
                &message(seq, "alice", &[]),
                NOW,
                NOW,
                &settings()
            ),
            None
        );
    }
    // Even after the flush cleared the pending count.
    let (cleared, _) = flush(&first, &context(vec![]));
    assert_eq!(
        accumulate(
            Some(&cleared),
            "bob",
            3,
            &message(2, "alice", &[]),
            NOW,
            NOW,
            &settings()
        ),
        None
    );
}

#[test]
fn own_messages_and_read_marks_clear_what_is_pending() {
    let state = run(&[message(1, "alice", &[]), message(2, "bob", &[])]).unwrap();
    assert_eq!(state.pending, 0);
    assert_eq!(state.counted_seq, 2);
    let state = run(&[
        message(1, "alice", &[]),
        message(2, "alice", &[]),
        read(1, "bob"),
    ])
    .unwrap();
    assert_eq!(
        state.pending, 2,
        "a read below the last message keeps it pending"
    );
    let state = run(&[
        message(1, "alice", &[]),
        message(2, "alice", &[]),
        read(2, "bob"),
    ])
    .unwrap();
    assert_eq!(state.pending, 0);
    assert!(
        run(&[read(2, "carol")]).is_none(),
        "others' reads are not ours"
    );
}

#[test]
fn mentions_are_remembered_until_the_flush() {
    let state = run(&[
        message(1, "alice", &[]),
        message(2, "alice", &["bob"]),
        message(3, "alice", &["carol"]),
    ])
    .unwrap();
    assert!(state.mentioned);
    let (cleared, _) = flush(&state, &context(vec![]));
    assert!(!cleared.mentioned);
    let next = accumulate(
        Some(&cleared),
        "bob",
        3,
        &message(4, "alice", &[]),
        NOW,
        NOW,
        &settings(),
    )
    .unwrap();
    assert!(!next.mentioned);
    assert_eq!((next.first_seq, next.pending), (4, 1));
}

#[test]
fn stale_messages_are_counted_but_not_notified() {
    let old = NOW - settings().stale_ms - 1;
    let state = accumulate(
        None,
        "bob",
        3,
        &message(1, "alice", &[]),
        old,
        NOW,
        &settings(),
    )
    .unwrap();
    assert_eq!((state.counted_seq, state.pending), (1, 0));
}

fn device(id: &str, provider: &str) -> DeviceToken {
    DeviceToken {
        device_id: id.into(),
        provider: provider.into(),
        token: format!("token-{id}"),
    }
}

fn context(devices: Vec<DeviceToken>) -> FlushContext {
    FlushContext {
        devices,
        online: HashSet::new(),
        kind: ConversationKind::Group,
        title: Some("Project X".into()),
        muted_until_ms: None,
        read_seq: 0,
        badge: 23,
        now_ms: NOW + 1_000,
    }
}

fn burst(count: u64, mentions: &[&str]) -> NotifyState {
    let events: Vec<_> = (1..=count)
        .map(|seq| message(seq, "alice", if seq == count { mentions } else { &[] }))
        .collect();
    run(&events).unwrap()
}

#[test]
fn a_flush_notifies_each_offline_device_once_with_the_badge() {
    let state = burst(3, &[]);
    let mut ctx = context(vec![
        device("phone", "apns"),
        device("laptop", "webhook"),
        device("tab", "fcm"),
    ]);
    ctx.online.insert("laptop".into());
    let (cleared, records) = flush(&state, &ctx);
    assert_eq!(cleared.pending, 0);
    assert_eq!(cleared.counted_seq, 3);
    let devices: Vec<&str> = records.iter().map(|r| r.device_id.as_str()).collect();
    assert_eq!(
        devices,
        vec!["phone", "tab"],
        "the online device is not notified"
    );
    let phone = &records[0];
    assert_eq!(phone.status, NotificationStatus::Queued);
    assert_eq!(phone.provider, "apns");
    let notice: Notice = serde_json::from_value(phone.payload.clone()).unwrap();
    assert_eq!(notice.title, "Project X");
    assert_eq!(notice.body, "3 new messages");
    assert_eq!(
        (
            notice.badge,
            notice.count,
            notice.first_seq,
            notice.last_seq
        ),
        (23, 3, 1, 3)
    );
    assert_eq!(notice.token, "token-phone");
    assert_eq!(notice.notification_id, phone.id);
    assert_eq!(
        flush(&state, &ctx).1,
        records,
        "flushing the same state again yields the same ids"
    );
    let ids: HashSet<_> = records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert!(uuid::Uuid::parse_str(&phone.id).is_ok());
}

#[test]
fn mutes_hold_notifications_back_unless_a_group_mention_breaks_through() {
    let mut ctx = context(vec![device("phone", "apns")]);
    ctx.muted_until_ms = Some(NOW + 3_600_000);
    let (_, records) = flush(&burst(2, &[]), &ctx);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, NotificationStatus::Skipped);
    assert!(records[0]
        .answer
        .as_deref()
        .unwrap()
        .starts_with("muted until"));
    let (_, records) = flush(&burst(2, &["bob"]), &ctx);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, NotificationStatus::Queued);
    assert_eq!(
        records[0].payload["body"],
        "2 new messages, and you were mentioned"
    );
    ctx.kind = ConversationKind::Direct;
    let (_, records) = flush(&burst(2, &["bob"]), &ctx);
    assert_eq!(
        records[0].status,
        NotificationStatus::Skipped,
        "a muted direct chat stays muted"
    );
    ctx.muted_until_ms = Some(NOW);
    let (_, records) = flush(&burst(2, &[]), &ctx);
    assert_eq!(
        records[0].status,
        NotificationStatus::Queued,
        "an expired mute mutes nothing"
    );
}

#[test]
fn a_conversation_read_elsewhere_is_not_notified() {
    let mut ctx = context(vec![device("phone", "apns")]);
    ctx.read_seq = 3;
    let (_, records) = flush(&burst(3, &[]), &ctx);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, NotificationStatus::Skipped);
}

#[test]
fn texts_read_naturally() {
    let one = burst(1, &[]);
    assert_eq!(
        texts(&one, ConversationKind::Group, Some("Project X")),
        ("Project X".into(), "alice: hello 1".into())
    );
    assert_eq!(
        texts(&one, ConversationKind::Direct, None),
        ("alice".into(), "hello 1".into())
    );
    let mentioned = burst(1, &["bob"]);
    assert_eq!(
        texts(&mentioned, ConversationKind::Group, None).1,
        "alice mentioned you: hello 1"
    );
    assert_eq!(texts(&one, ConversationKind::Group, None).0, "g:team");
    let mut long = one.clone();
    long.last_message = serde_json::from_value(
        json!({"sender_id": "a", "kind": "text", "body": {"text": "x".repeat(500)}}),
    )
    .unwrap();
    assert!(
        texts(&long, ConversationKind::Direct, None)
            .1
            .chars()
            .count()
            <= 121
    );
    long.last_message =
        serde_json::from_value(json!({"sender_id": "a", "kind": "image", "body": {"url": "u"}}))
            .unwrap();
    assert_eq!(texts(&long, ConversationKind::Direct, None).1, "[image]");
}

fn queued() -> NotificationRecord {
    let (_, records) = flush(&burst(1, &[]), &context(vec![device("phone", "webhook")]));
    records.into_iter().next().unwrap()
}

#[test]
fn outcomes_settle_records() {
    let record = queued();
    let s = settings();
    let (effect, follow) = settle(&record, &SendOutcome::Delivered("200 OK".into()), NOW, &s);
    assert!(matches!(
        effect,
        NotifyEffect::Settle {
            status: NotificationStatus::Sent,
            attempts: 1,
            ..
        }
    ));
    assert_eq!(follow, FollowUp::None);
    let (effect, follow) = settle(&record, &SendOutcome::InvalidToken("410".into()), NOW, &s);
    assert!(matches!(
        effect,
        NotifyEffect::Settle {
            status: NotificationStatus::Invalid,
            ..
        }
    ));
    assert_eq!(follow, FollowUp::RemoveToken);
    let retry = SendOutcome::Retry {
        after: Some(Duration::from_secs(2)),
        answer: "429".into(),
    };
    let (effect, follow) = settle(&record, &retry, NOW, &s);
    match effect {
        NotifyEffect::Settle {
            status,
            next_attempt_ms,
            ..
        } => {
            assert_eq!(status, NotificationStatus::Queued);
            assert_eq!(
                next_attempt_ms,
                NOW + 2_000,
                "Retry-After is longer than the first backoff"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(follow, FollowUp::None);
    let mut tired = record.clone();
    tired.attempts = s.max_attempts - 1;
    let (effect, follow) = settle(&tired, &retry, NOW, &s);
    assert!(matches!(
        effect,
        NotifyEffect::Settle {
            status: NotificationStatus::Dead,
            ..
        }
    ));
    assert!(
        matches!(follow, FollowUp::DeadLetter(reason) if reason.contains("gave up after 6 attempts") && reason.contains("429"))
    );
    let (_, follow) = settle(&record, &SendOutcome::Failed("400 bad".into()), NOW, &s);
    assert!(matches!(follow, FollowUp::DeadLetter(reason) if reason.contains("400 bad")));
}

#[test]
fn retry_delays_grow_and_honour_retry_after() {
    let s = Settings {
        retry_base_ms: 100,
        retry_cap_ms: 1_000,
        ..Settings::default()
    };
    // Exponential and capped, each within [d/2, d] (jittered per
    // notification, the same for the same one).
    for (attempts, ceiling) in [(1, 100), (2, 200), (3, 400), (10, 1_000)] {
        let delay = s.retry_delay_ms("n1", attempts, None);
        assert!(
            (ceiling / 2..=ceiling).contains(&delay),
            "{attempts}: {delay}"
        );
        assert_eq!(delay, s.retry_delay_ms("n1", attempts, None));
    }
    let spread: std::collections::BTreeSet<i64> = (0..50)
        .map(|n| s.retry_delay_ms(&format!("n{n}"), 3, None))
        .collect();
    assert!(
        spread.len() > 10,
        "queued notifications come back spread out"
    );
    assert_eq!(
        s.retry_delay_ms("n1", 1, Some(Duration::from_secs(5))),
        5_000
    );
    assert_eq!(
        s.retry_delay_ms("n1", 1, Some(Duration::from_secs(86_400))),
        3_600_000
    );
}

mod batches {
    use super::*;
    use im_events::{Delivery, DeliveryData, DeliveryPayload, Envelope};
    use im_store::sqlite::SqliteNotificationStore;

    fn incoming(users: &[&str], event: TimelineEvent) -> Incoming {
        let delivery: Delivery = Envelope::new(
            "urn:im:pipeline",
            "d",
            "2026-01-01T00:00:00.000Z",
            DeliveryPayload::Delivery(DeliveryData {
                users: users.iter().map(|u| u.to_string()).collect(),
                event,
                trace: None,
            }),
        );
        Incoming {
            subject: "im.delivery.3.message".into(),
            headers: vec![],
            payload: serde_json::to_vec(&delivery).unwrap().into(),
            stream_seq: 1,
            delivered: 1,
            published_ms: NOW,
            held_ms: 0,
        }
    }

    #[test]
    fn a_batch_is_decided_through_the_store_once_and_replays_to_nothing() {
        let dir = tempfile_dir();
        let store = SqliteNotificationStore::open_writer(
            &dir.join("offline.db"),
            im_store::sqlite::Durability::Normal,
        )
        .unwrap();
        let mut batch: Vec<Incoming> = (1..=5)
            .map(|seq| incoming(&["alice", "bob", "carol"], message(seq, "alice", &[])))
            .collect();
        batch.push(Incoming {
            payload: bytes::Bytes::from_static(b"not json"),
            ..batch[0].clone()
        });
        let (effects, outcomes) = decide_batch(&store, &batch, 3, NOW, &settings()).unwrap();
        assert!(matches!(outcomes[5], Outcome::Reject { .. }));
        assert!(outcomes[..5].iter().all(|o| matches!(o, Outcome::Done)));
        assert_eq!(effects.len(), 3, "one state per user and conversation");
        let fence = im_store::Fence {
            scope: "offline".into(),
            partition: 3,
            epoch: 1,
        };
        store.apply(&fence, &effects).unwrap();
        let bob = store.notify_state("bob", "g:team").unwrap().unwrap();
        assert_eq!(bob.pending, 5);
        assert_eq!(
            store
                .notify_state("alice", "g:team")
                .unwrap()
                .unwrap()
                .pending,
            0
        );
        let (again, _) = decide_batch(&store, &batch[..5], 3, NOW, &settings()).unwrap();
        assert!(again.is_empty(), "a redelivered batch changes nothing");
        std::fs::remove_dir_all(dir).ok();
    }

    fn joined(user: &str, at_seq: u64) -> TimelineEvent {
        TimelineEvent::Changed(im_events::ConversationChanged {
            conversation_id: "g:team".into(),
            kind: ConversationKind::Group,
            title: None,
            added: vec![user.into()],
            removed: vec![],
            at_seq,
            diffusion: Diffusion::Write,
            mode_changed: false,
            members: vec![],
            source: "urn:test".into(),
            event_id: format!("join-{user}-{at_seq}"),
        })
    }

    fn store() -> (SqliteNotificationStore, std::path::PathBuf) {
        let dir = tempfile_dir();
        let store = SqliteNotificationStore::open_writer(
            &dir.join("offline.db"),
            im_store::sqlite::Durability::Normal,
        )
        .unwrap();
        (store, dir)
    }

    fn apply(store: &SqliteNotificationStore, effects: &[NotifyEffect]) {
        let fence = im_store::Fence {
            scope: "offline".into(),
            partition: 3,
            epoch: 1,
        };
        store.apply(&fence, effects).unwrap();
    }

    fn kinds(outcomes: &[Outcome]) -> Vec<&'static str> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Done => "done",
                Outcome::Hold => "hold",
                _ => "other",
            })
            .collect()
    }

    /// The chaos verifier's case: a delivery lost on its way (3) comes back
    /// after later ones (4, 5). Counting 4 first used to make 3 look
    /// counted already, and 3 was never notified.
    #[test]
    fn a_late_message_is_waited_for_and_then_counted_not_skipped() {
        let (store, dir) = store();
        let (effects, outcomes) = decide_batch(
            &store,
            &[
                incoming(&["bob"], joined("bob", 0)),
                incoming(&["bob"], message(1, "alice", &[])),
                incoming(&["bob"], message(2, "alice", &[])),
                incoming(&["bob"], message(4, "alice", &[])),
                incoming(&["bob"], message(5, "alice", &[])),
            ],
            3,
            NOW,
            &settings(),
        )
        .unwrap();
        assert_eq!(kinds(&outcomes), ["done", "done", "done", "hold", "hold"]);
        apply(&store, &effects);
        let bob = store.notify_state("bob", "g:team").unwrap().unwrap();
        assert_eq!((bob.counted_seq, bob.pending), (2, 2));
        // The held ones come back first, then 3 arrives.
        let (effects, outcomes) = decide_batch(
            &store,
            &[
                incoming(&["bob"], message(4, "alice", &[])),
                incoming(&["bob"], message(5, "alice", &[])),
                incoming(&["bob"], message(3, "alice", &[])),
            ],
            3,
            NOW,
            &settings(),
        )
        .unwrap();
        assert_eq!(kinds(&outcomes), ["done", "done", "done"]);
        apply(&store, &effects);
        let bob = store.notify_state("bob", "g:team").unwrap().unwrap();
        assert_eq!(
            (bob.counted_seq, bob.pending, bob.first_seq, bob.last_seq),
            (5, 5, 1, 5),
            "every message counted once"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_member_who_joined_later_does_not_wait_for_seqs_before_the_join() {
        let (store, dir) = store();
        let (effects, outcomes) = decide_batch(
            &store,
            &[
                incoming(&["bob"], joined("bob", 7)),
                incoming(&["bob"], message(8, "alice", &[])),
            ],
            3,
            NOW,
            &settings(),
        )
        .unwrap();
        assert_eq!(kinds(&outcomes), ["done", "done"]);
        apply(&store, &effects);
        let bob = store.notify_state("bob", "g:team").unwrap().unwrap();
        assert_eq!((bob.counted_seq, bob.pending, bob.first_seq), (8, 1, 8));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_gap_that_never_fills_is_given_up_after_the_hold_limit() {
        let (store, dir) = store();
        let (effects, _) = decide_batch(
            &store,
            &[
                incoming(&["bob"], joined("bob", 0)),
                incoming(&["bob"], message(1, "alice", &[])),
            ],
            3,
            NOW,
            &settings(),
        )
        .unwrap();
        apply(&store, &effects);
        let mut late = incoming(&["bob"], message(3, "alice", &[]));
        late.held_ms = im_runtime::hold_limit().as_millis() as u64;
        let (effects, outcomes) = decide_batch(&store, &[late], 3, NOW, &settings()).unwrap();
        assert_eq!(kinds(&outcomes), ["done"]);
        apply(&store, &effects);
        let bob = store.notify_state("bob", "g:team").unwrap().unwrap();
        assert_eq!((bob.counted_seq, bob.pending, bob.last_seq), (3, 2, 3));
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "im-offline-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
