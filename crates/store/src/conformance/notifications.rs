//! Notification stores.

use super::*;

pub(super) fn notify_state(
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
        last_message: Some(super::preview("alice", "hi")),
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
