use super::*;
use im_events::{
    CommittedMessage, ConversationChanged, ConversationKind, MessageEdited, MessageKind,
    ReadMarked, UserMuted,
};
use proptest::prelude::*;
use serde_json::json;

fn message(seq: u64, sender: &str) -> TimelineEvent {
    TimelineEvent::Committed(CommittedMessage {
        message_id: format!("m{seq}"),
        conversation_id: "c".into(),
        seq,
        sender_id: sender.into(),
        source: "s".into(),
        event_id: format!("e{seq}"),
        sent_at: "t".into(),
        kind: MessageKind::Text,
        body: json!({"text": seq}),
        mentions: vec![],
        diffusion: Diffusion::Write,
        reply_to: None,
    })
}

fn read(seq: u64, id: &str) -> TimelineEvent {
    TimelineEvent::Read(ReadMarked {
        conversation_id: "c".into(),
        user_id: "u".into(),
        seq,
        source: "s".into(),
        event_id: id.into(),
        receipt_to: vec![],
    })
}

fn edit(id: &str) -> TimelineEvent {
    TimelineEvent::Edited(MessageEdited {
        recipients: vec![],
        conversation_id: "c".into(),
        seq: 1,
        message_id: "m1".into(),
        editor_id: "x".into(),
        body: json!({}),
        edited_at: "t".into(),
        source: "s".into(),
        event_id: id.into(),
    })
}

fn joined(user: &str, at_seq: u64) -> TimelineEvent {
    TimelineEvent::Changed(ConversationChanged {
        conversation_id: "c".into(),
        kind: ConversationKind::Group,
        title: None,
        added: vec![user.into()],
        removed: vec![],
        at_seq,
        diffusion: Diffusion::Write,
        mode_changed: false,
        members: vec![],
        source: "s".into(),
        event_id: "j".into(),
    })
}

/// Apply events the way decide_batch does, returning the final state and
/// all effects.
fn apply_all(user: &str, events: &[TimelineEvent]) -> (UserState, Vec<UserEffect>) {
    let mut state = UserState::default();
    let mut applied = std::collections::HashSet::new();
    let mut all = Vec::new();
    for event in events {
        state.applied = needs_applied_check(event) && applied.contains(&event.effect_key());
        let (effects, next) = decide(user, event, &state);
        if needs_applied_check(event) {
            applied.insert(event.effect_key());
        }
        all.extend(effects);
        state = UserState {
            applied: false,
            ..next
        };
    }
    (state, all)
}

/// A real store, and a batch runner that applies what it decides.
struct Batches {
    _dir: tempfile::TempDir,
    store: im_store::sqlite::SqliteUserStore,
}

impl Batches {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = im_store::sqlite::SqliteUserStore::open_writer(
            &dir.path().join("users.db"),
            Default::default(),
        )
        .unwrap();
        Batches { _dir: dir, store }
    }

    /// Each event a delivery to "u"; `held_ms` as the runtime would set it.
    fn run(&self, events: &[(TimelineEvent, u64)]) -> Vec<Outcome> {
        self.commit(events).outcomes
    }

    /// As [`Self::run`], with the whole decision.
    fn commit(&self, events: &[(TimelineEvent, u64)]) -> BatchDecision {
        let batch: Vec<Incoming> = events
            .iter()
            .map(|(event, held_ms)| {
                let delivery = Delivery::new(
                    "test",
                    event.effect_key(),
                    "t",
                    DeliveryPayload::Delivery(im_events::DeliveryData {
                        users: vec!["u".into()],
                        event: event.clone(),
                        trace: None,
                    }),
                );
                Incoming {
                    subject: "im.delivery.p0".into(),
                    payload: serde_json::to_vec(&delivery).unwrap().into(),
                    held_ms: *held_ms,
                    ..Incoming::default()
                }
            })
            .collect();
        let decision = decide_batch(&self.store, None, &batch).unwrap();
        let fence = im_store::Fence {
            scope: FUNCTION.into(),
            partition: 0,
            epoch: 1,
        };
        self.store.apply(&fence, &decision.effects).unwrap();
        decision
    }

    /// The seqs of the message items in the sync log, in log order.
    fn log(&self) -> Vec<u64> {
        self.store
            .sync_items("u", 0, 1000)
            .unwrap()
            .iter()
            .filter_map(|r| r.item.message().map(|m| m.seq))
            .collect()
    }

    fn row(&self) -> UserConversation {
        self.store.user_conversation("u", "c").unwrap().unwrap()
    }
}

#[test]
fn unread_frames_go_out_only_where_a_count_changed_and_carry_what_was_committed() {
    let batches = Batches::new();
    let dir = tempfile::tempdir().unwrap();
    let conversations = im_store::sqlite::SqliteConversationStore::open_writer(
        &dir.path().join("conversations.db"),
        Default::default(),
    )
    .unwrap();
    let key = ("u".to_string(), "c".to_string());
    let to_push =
        |decision: &BatchDecision| counts_to_push(&decision.effects, &decision.unread_before);
    // The user's own first message: a new row, nothing unread in it.
    let own = batches.commit(&[(message(1, "u"), 0)]);
    assert!(to_push(&own).is_empty(), "{:?}", own.effects);
    // Someone else's message: unread 0 -> 1.
    let first = batches.commit(&[(message(2, "x"), 0)]);
    assert_eq!(to_push(&first), vec![key.clone()]);
    let counts = read_counts(&batches.store, &conversations, std::slice::from_ref(&key)).unwrap();
    assert_eq!(
        counts[&key],
        UnreadCounts {
            unread: 1,
            total: 1,
            as_of: batches.store.last_sync_seq("u").unwrap()
        }
    );
    // Read: 1 -> 0.
    assert_eq!(
        to_push(&batches.commit(&[(read(2, "r2"), 0)])),
        vec![key.clone()]
    );
    // The user's own message: 0 before, 0 after, no frame.
    let own = batches.commit(&[(message(3, "u"), 0)]);
    assert!(to_push(&own).is_empty(), "{:?}", own.effects);
    // Its notice is still pushed, counted, without counts.
    let notices = push_notices(&own.effects, &HashMap::new(), Some(&HashMap::new()));
    assert_eq!(notices.concat().len(), 1);
    assert!(notices[0][0].counted && notices[0][0].unread.is_none());
    // Two messages in one batch: one frame, on the last of them.
    let two = batches.commit(&[(message(4, "x"), 0), (message(5, "x"), 0)]);
    assert_eq!(to_push(&two), vec![key.clone()]);
    let counts = read_counts(&batches.store, &conversations, &to_push(&two)).unwrap();
    assert_eq!((counts[&key].unread, counts[&key].total), (2, 2));
    let notices = push_notices(&two.effects, &HashMap::new(), Some(&counts)).concat();
    assert_eq!(notices.len(), 2);
    assert_eq!(
        notices
            .iter()
            .map(|n| n.unread.map(|c| c.unread))
            .collect::<Vec<_>>(),
        vec![None, Some(2)]
    );
    // Counts not read: push reads them itself.
    let uncounted = push_notices(&two.effects, &HashMap::new(), None).concat();
    assert!(uncounted.iter().all(|n| !n.counted && n.unread.is_none()));
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

#[test]
fn a_later_message_waits_in_the_batch_for_an_earlier_one() {
    let b = Batches::new();
    let outcomes = b.run(&[
        (joined("u", 0), 0),
        (message(1, "x"), 0),
        (message(3, "x"), 0),
        (read(3, "r"), 0),
        (message(2, "x"), 0),
    ]);
    assert_eq!(kinds(&outcomes), ["done"; 5]);
    assert_eq!(b.log(), [1, 2, 3], "the sync log is in seq order");
    let row = b.row();
    assert_eq!((row.last_seq, row.read_seq), (3, 3), "the mark waited too");
}

#[test]
fn a_message_held_across_batches_follows_the_earlier_one() {
    let b = Batches::new();
    let outcomes = b.run(&[
        (joined("u", 0), 0),
        (message(1, "x"), 0),
        (message(3, "x"), 0),
    ]);
    assert_eq!(kinds(&outcomes), ["done", "done", "hold"]);
    assert_eq!(b.log(), [1]);
    // The runtime hands the held one back first; the missing one follows.
    let outcomes = b.run(&[
        (message(3, "x"), 1_000),
        (message(2, "x"), 0),
        (message(4, "x"), 0),
    ]);
    assert_eq!(kinds(&outcomes), ["done"; 3]);
    assert_eq!(b.log(), [1, 2, 3, 4]);
    // A copy that comes again changes nothing.
    let outcomes = b.run(&[(message(3, "x"), 0)]);
    assert_eq!(kinds(&outcomes), ["done"]);
    assert_eq!(b.log(), [1, 2, 3, 4]);
    assert_eq!(b.row().unread(), 4);
}

#[test]
fn after_the_hold_limit_the_missing_message_is_given_up() {
    let b = Batches::new();
    b.run(&[(joined("u", 0), 0), (message(1, "x"), 0)]);
    let limit = im_runtime::hold_limit().as_millis() as u64;
    assert_eq!(kinds(&b.run(&[(message(3, "x"), limit - 1)])), ["hold"]);
    assert_eq!(kinds(&b.run(&[(message(3, "x"), limit)])), ["done"]);
    assert_eq!(b.log(), [1, 3]);
    assert_eq!(b.row().unread(), 3, "the count still covers seq 2");
    // Too late: it would break the order, so it is not appended.
    b.run(&[(message(2, "x"), 0)]);
    assert_eq!(b.log(), [1, 3]);
}

#[test]
fn a_message_waits_for_the_membership_that_admits_it() {
    let b = Batches::new();
    // The join (at seq 7) arrives after the first message sent after it.
    let outcomes = b.run(&[(message(8, "x"), 0), (joined("u", 7), 0)]);
    assert_eq!(kinds(&outcomes), ["done", "done"]);
    let row = b.row();
    assert_eq!((row.joined_seq, row.last_seq, row.unread()), (7, 8, 1));
    assert_eq!(b.log(), [8]);
}

#[test]
fn unread_follows_messages_and_reads() {
    let (state, effects) = apply_all(
        "u",
        &[
            joined("u", 0),
            message(1, "x"),
            message(2, "x"),
            message(3, "u"),
            message(4, "x"),
            read(2, "r1"),
        ],
    );
    let row = state.row.unwrap();
    assert_eq!(
        (row.last_seq, row.read_seq, row.unread()),
        (4, 3, 1),
        "own message moves read_seq; a lower mark does nothing"
    );
    let syncs: Vec<u64> = effects
        .iter()
        .filter_map(|e| match e {
            UserEffect::AppendSync(r) => Some(r.sync_seq),
            _ => None,
        })
        .collect();
    assert_eq!(syncs, vec![1, 2, 3, 4], "the stale read adds no sync item");
    let (state, _) = apply_all(
        "u",
        &[
            joined("u", 0),
            message(1, "x"),
            message(2, "x"),
            read(9, "r"),
        ],
    );
    assert_eq!(
        state.row.unwrap().read_seq,
        2,
        "a mark is clamped to last_seq"
    );
}

#[test]
fn joining_late_counts_only_what_follows() {
    let (state, _) = apply_all("u", &[joined("u", 7), message(8, "x")]);
    let row = state.row.unwrap();
    assert_eq!(
        (row.joined_seq, row.last_seq, row.read_seq, row.unread()),
        (7, 8, 7, 1)
    );
}

#[test]
fn edits_take_a_sync_seq_but_change_no_count() {
    let (state, effects) = apply_all(
        "u",
        &[joined("u", 0), message(1, "x"), edit("e1"), edit("e1")],
    );
    assert_eq!(state.row.unwrap().unread(), 1);
    assert_eq!(state.last_sync_seq, 2, "the repeated edit is applied once");
    assert!(effects
        .iter()
        .any(|e| matches!(e, UserEffect::MarkApplied { key, .. } if key.starts_with("e:"))));
}

#[test]
fn mute_and_leave() {
    let mute = TimelineEvent::Muted(UserMuted {
        user_id: "u".into(),
        conversation_id: "c".into(),
        until_ms: Some(5),
        source: "s".into(),
        event_id: "m".into(),
    });
    let (state, _) = apply_all("u", &[joined("u", 0), mute]);
    assert_eq!(state.row.as_ref().unwrap().muted_until_ms, Some(5));
    let leave = TimelineEvent::Changed(ConversationChanged {
        conversation_id: "c".into(),
        kind: ConversationKind::Group,
        title: None,
        added: vec![],
        removed: vec!["u".into()],
        at_seq: 3,
        diffusion: Diffusion::Write,
        mode_changed: false,
        members: vec![],
        source: "s".into(),
        event_id: "l".into(),
    });
    let (state, effects) = apply_all("u", &[joined("u", 0), message(1, "x"), leave]);
    assert!(state.row.is_none());
    assert!(matches!(
        effects.last(),
        Some(UserEffect::DeleteUserConversation { .. })
    ));
}

#[test]
fn read_diffusion_messages_only_mark_the_senders_read() {
    let own = match message(4, "u") {
        TimelineEvent::Committed(mut m) => {
            m.diffusion = Diffusion::Read;
            TimelineEvent::Committed(m)
        }
        _ => unreachable!(),
    };
    let (state, effects) = apply_all("u", &[joined("u", 0), own.clone()]);
    let row = state.row.unwrap();
    assert_eq!(
        (row.last_seq, row.read_seq),
        (0, 4),
        "last_seq is what materialization copied"
    );
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, UserEffect::AppendSync(_))),
        "no copy in the log"
    );
    let (again, _) = apply_all("u", &[joined("u", 0), own.clone(), own]);
    assert_eq!(again.row.unwrap().read_seq, 4);
}

fn arbitrary_event() -> impl Strategy<Value = TimelineEvent> {
    prop_oneof![
        (1..6u64, prop::bool::ANY).prop_map(|(seq, own)| message(seq, if own { "u" } else { "x" })),
        (1..6u64, 0..3u32).prop_map(|(seq, n)| read(seq, &format!("r{n}"))),
        (0..3u32).prop_map(|n| edit(&format!("e{n}"))),
    ]
}

proptest! {
    /// Redelivering any event right after itself changes nothing: same
    /// final row, same sync items.
    #[test]
    fn redelivery_changes_nothing(events in prop::collection::vec(arbitrary_event(), 0..25), repeat in prop::collection::vec(any::<bool>(), 25)) {
        let mut once = vec![joined("u", 0)];
        once.extend(events.iter().cloned());
        let mut twice = vec![joined("u", 0)];
        for (event, again) in events.iter().zip(repeat.iter().cycle()) {
            twice.push(event.clone());
            if *again {
                twice.push(event.clone());
            }
        }
        let (once_state, once_effects) = apply_all("u", &once);
        let (twice_state, twice_effects) = apply_all("u", &twice);
        prop_assert_eq!(&once_state.row, &twice_state.row);
        prop_assert_eq!(once_state.last_sync_seq, twice_state.last_sync_seq);
        let syncs = |effects: &[UserEffect]| effects.iter().filter_map(|e| match e {
            UserEffect::AppendSync(r) => Some((r.sync_seq, r.event_key.clone())),
            _ => None,
        }).collect::<Vec<_>>();
        prop_assert_eq!(syncs(&once_effects), syncs(&twice_effects));
        // And the invariant holds: unread never negative, read never past last.
        if let Some(row) = &once_state.row {
            prop_assert!(row.read_seq <= row.last_seq);
        }
    }
}
