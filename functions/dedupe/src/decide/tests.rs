use super::*;
use im_events::{
    rfc3339_ms, CreateData, EditData, Envelope, MembersData, MessageKind, ReadData, RecallData,
    SendData,
};
use proptest::prelude::*;
use serde_json::json;

fn accepted(id: &str, at_ms: i64, command: Command) -> Accepted {
    let mut event = Envelope::new("urn:test", id, rfc3339_ms(at_ms), command);
    event.imreceived = Some(rfc3339_ms(at_ms));
    event
}

fn send(conversation: &str, sender: &str) -> Command {
    Command::Send(SendData {
        conversation_id: conversation.into(),
        sender_id: sender.into(),
        kind: MessageKind::Text,
        body: json!({"text": "hi"}),
        mentions: vec![],
        reply_to: None,
    })
}

fn create(conversation: &str, members: &[&str], admins: &[&str]) -> Command {
    Command::Create(CreateData {
        conversation_id: conversation.into(),
        kind: ConversationKind::Group,
        members: members.iter().map(|m| m.to_string()).collect(),
        title: None,
        admins: admins.iter().map(|m| m.to_string()).collect(),
        history_visibility: Default::default(),
    })
}

/// Apply events in order to an in-memory state, as the shell does.
fn run(
    view: &mut MemoryView,
    config: &Config,
    events: &[Accepted],
) -> Vec<Result<Decision, EventError>> {
    events
        .iter()
        .map(|event| {
            // Unknown keys read as "absent", as after a store lookup.
            let result = decide(event, view, config);
            if let Ok(decision) = &result {
                view.absorb(&decision.effects);
            }
            result
        })
        .collect()
}

fn committed(results: &[Result<Decision, EventError>]) -> Vec<(String, u64)> {
    results
        .iter()
        .flat_map(|r| r.as_ref().map(|d| d.outputs.clone()).unwrap_or_default())
        .filter_map(|o| match o {
            TimelineEvent::Committed(m) => Some((m.conversation_id, m.seq)),
            _ => None,
        })
        .collect()
}

fn committed_seqs(results: &[Result<Decision, EventError>]) -> Vec<u64> {
    committed(results).into_iter().map(|(_, seq)| seq).collect()
}

fn send_reply(conversation: &str, sender: &str, reply_to: u64) -> Command {
    let Command::Send(mut data) = send(conversation, sender) else {
        unreachable!()
    };
    data.reply_to = Some(reply_to);
    Command::Send(data)
}

fn react(seq: u64, user: &str, emoji: &str, remove: bool) -> Command {
    Command::React(im_events::ReactData {
        conversation_id: "g:r".into(),
        seq,
        user_id: user.into(),
        emoji: emoji.into(),
        remove,
    })
}

fn block(blocking: bool) -> Command {
    let data = im_events::BlockData {
        user_id: "alice".into(),
        blocked_user_id: "mallory".into(),
    };
    if blocking {
        Command::Block(data)
    } else {
        Command::Unblock(data)
    }
}

fn code(result: &Result<Decision, EventError>) -> Option<ErrorCode> {
    result.as_ref().err().map(|error| error.code)
}

/// Seed 002: the blocked user's direct messages go back; the blocker's
/// still go; after the unblock the blocked user's go again.
#[test]
fn a_block_refuses_the_blocked_users_direct_messages_only() {
    let mut view = MemoryView::default();
    let results = run(
        &mut view,
        &Config::default(),
        &[
            accepted("1", 0, send("dm:alice:mallory", "mallory")),
            accepted("2", 1, block(true)),
            accepted("3", 2, send("dm:alice:mallory", "mallory")),
            accepted("4", 3, send("dm:alice:mallory", "alice")),
            accepted("5", 4, block(true)),
            accepted("6", 5, block(false)),
            accepted("7", 6, send("dm:alice:mallory", "mallory")),
        ],
    );
    assert_eq!(committed_seqs(&results), vec![1, 2, 3]);
    assert_eq!(code(&results[2]), Some(ErrorCode::Blocked));
    assert!(results[2].as_ref().unwrap_err().reason.contains("alice"));
    // A repeated block changes nothing and says so by producing nothing.
    assert!(results[4].as_ref().unwrap().outputs.is_empty());
    assert_eq!(
        Command::Block(im_events::BlockData {
            user_id: "alice".into(),
            blocked_user_id: "mallory".into()
        })
        .conversation_id(),
        "dm:alice:mallory"
    );
}

/// Reactions: idempotent per (user, emoji), to existing messages by
/// members only, told to the members; never a seq.
#[test]
fn reactions_are_idempotent_and_need_a_message_and_a_member() {
    let mut view = MemoryView::default();
    view.load_members("g:r", vec![]);
    let results = run(
        &mut view,
        &Config::default(),
        &[
            accepted("c", 0, create("g:r", &["alice", "bob"], &[])),
            accepted("s", 1, send("g:r", "alice")),
            accepted("r1", 2, react(1, "bob", "👍", false)),
            accepted("r2", 3, react(1, "bob", "👍", false)),
            accepted("r3", 4, react(1, "bob", "👍", true)),
            accepted("r4", 5, react(1, "bob", "👍", true)),
            accepted("r5", 6, react(9, "bob", "👍", false)),
            accepted("r6", 7, react(1, "carol", "👍", false)),
        ],
    );
    let reacted: Vec<(bool, Vec<String>)> = results
        .iter()
        .flat_map(|r| r.as_ref().map(|d| d.outputs.clone()).unwrap_or_default())
        .filter_map(|o| match o {
            TimelineEvent::Reacted(r) => Some((r.removed, r.recipients)),
            _ => None,
        })
        .collect();
    let members = vec!["alice".to_string(), "bob".to_string()];
    assert_eq!(reacted, vec![(false, members.clone()), (true, members)]);
    assert_eq!(code(&results[6]), Some(ErrorCode::NotFound));
    assert_eq!(code(&results[7]), Some(ErrorCode::NotMember));
    assert_eq!(committed_seqs(&results), vec![1]);
    // Carol joins after seq 1 of a `joined` conversation: seq 1 is not
    // hers to see, so reacting to it answers as a missing message would.
    let later = run(
        &mut view,
        &Config::default(),
        &[
            accepted(
                "add",
                8,
                Command::AddMembers(MembersData {
                    conversation_id: "g:r".into(),
                    members: vec!["carol".into()],
                }),
            ),
            accepted("r7", 9, react(1, "carol", "👍", false)),
            accepted("s2", 10, send("g:r", "alice")),
            accepted("r8", 11, react(2, "carol", "👍", false)),
        ],
    );
    assert_eq!(code(&later[1]), Some(ErrorCode::NotFound));
    assert!(later[3].is_ok(), "{:?}", later[3]);
}

#[test]
fn a_reply_names_a_message_of_its_conversation() {
    let mut view = MemoryView::default();
    let results = run(
        &mut view,
        &Config::default(),
        &[
            accepted("1", 0, send("dm:a:b", "a")),
            accepted("2", 1, send_reply("dm:a:b", "b", 1)),
            accepted("3", 2, send_reply("dm:a:b", "b", 3)),
            accepted("4", 3, send_reply("dm:a:b", "b", 0)),
        ],
    );
    assert_eq!(committed_seqs(&results), vec![1, 2]);
    let reply = results[1].as_ref().unwrap();
    assert!(matches!(&reply.outputs[0], TimelineEvent::Committed(m) if m.reply_to == Some(1)));
    assert_eq!(code(&results[2]), Some(ErrorCode::InvalidReply));
    assert_eq!(code(&results[3]), Some(ErrorCode::InvalidReply));
}

/// Receipts only rise; each rise is told to the other members, a
/// repeat to no one; a delivery past the end is clamped to it.
#[test]
fn receipts_rise_and_tell_the_others() {
    let mut view = MemoryView::default();
    view.load_members("g:r", vec![]);
    let read = |seq| {
        Command::Read(ReadData {
            conversation_id: "g:r".into(),
            user_id: "bob".into(),
            seq,
        })
    };
    let delivered = |seq| {
        Command::Delivered(im_events::DeliveredData {
            conversation_id: "g:r".into(),
            user_id: "bob".into(),
            seq,
        })
    };
    let results = run(
        &mut view,
        &Config::default(),
        &[
            accepted("c", 0, create("g:r", &["alice", "bob"], &[])),
            accepted("s1", 1, send("g:r", "alice")),
            accepted("s2", 2, send("g:r", "alice")),
            accepted("d1", 3, delivered(7)),
            accepted("d2", 4, delivered(2)),
            accepted("r1", 5, read(1)),
            accepted("r2", 6, read(1)),
        ],
    );
    let told: Vec<(String, u64, Vec<String>)> = results
        .iter()
        .flat_map(|r| r.as_ref().map(|d| d.outputs.clone()).unwrap_or_default())
        .filter_map(|o| match o {
            TimelineEvent::Delivered(d) => Some(("delivered".into(), d.seq, d.receipt_to)),
            TimelineEvent::Read(r) => Some(("read".into(), r.seq, r.receipt_to)),
            _ => None,
        })
        .collect();
    let alice = vec!["alice".to_string()];
    assert_eq!(
        told,
        vec![
            ("delivered".to_string(), 2, alice.clone()),
            ("read".to_string(), 1, alice),
            ("read".to_string(), 1, vec![]),
        ]
    );
    assert_eq!(view.receipt("g:r", "bob"), (1, 2));
}

/// Issue 13: a known (source, id) answers only the same event. The
/// pre-emption that lost a message: the id's first event was sent by
/// `a`; `b` reusing it must be refused, never acked as `a`'s message.
#[test]
fn a_reused_identity_with_other_contents_is_a_conflict() {
    let mut view = MemoryView::default();
    let config = Config::default();
    let results = run(
        &mut view,
        &config,
        &[
            accepted("c", 0, create("g:1", &["a", "b"], &[])),
            accepted("x", 1, send("g:1", "a")),
            accepted("x", 2, send("g:1", "a")),
            accepted("x", 3, send("g:1", "b")),
            accepted("x", 4, send("g:2", "a")),
        ],
    );
    assert_eq!(
        committed_seqs(&results[1..3]),
        [1, 1],
        "a repeat is answered"
    );
    for refused in &results[3..] {
        let error = refused.as_ref().unwrap_err();
        assert_eq!(error.code, ErrorCode::Conflict);
        assert!(error.reason.contains("new id"), "{}", error.reason);
    }
    assert_eq!(view.messages.len(), 1);
}

#[test]
fn records_from_before_fingerprints_are_compared_by_what_they_hold() {
    let mut view = MemoryView::default();
    let config = Config::default();
    run(
        &mut view,
        &config,
        &[
            accepted("c", 0, create("g:1", &["a", "b"], &[])),
            accepted("x", 1, send("g:1", "a")),
        ],
    );
    for record in view.idempotency.values_mut().flatten() {
        record.fingerprint.clear();
    }
    let again = run(&mut view, &config, &[accepted("x", 2, send("g:1", "a"))]);
    assert_eq!(committed_seqs(&again), [1]);
    let other = run(&mut view, &config, &[accepted("x", 3, send("g:1", "b"))]);
    assert_eq!(other[0].as_ref().unwrap_err().code, ErrorCode::Conflict);
}

#[test]
fn messages_get_continuous_seqs() {
    let mut view = MemoryView::default();
    let mut events = vec![accepted("c", 0, create("g:1", &["a", "b"], &["a"]))];
    events.extend((0..5).map(|n| {
        accepted(
            &format!("m{n}"),
            n,
            send("g:1", if n % 2 == 0 { "a" } else { "b" }),
        )
    }));
    let results = run(&mut view, &Config::default(), &events);
    assert_eq!(committed_seqs(&results), vec![1, 2, 3, 4, 5]);
    assert_eq!(view.conversation("g:1").unwrap().last_seq, 5);
}

#[test]
fn a_duplicate_changes_nothing_and_republishes_the_same_message() {
    let mut view = MemoryView::default();
    let events = vec![
        accepted("c", 0, create("g:1", &["a", "b"], &[])),
        accepted("m", 1, send("g:1", "a")),
        accepted("m", 99, send("g:1", "a")),
    ];
    let results = run(&mut view, &Config::default(), &events);
    let first = results[1].as_ref().unwrap();
    let again = results[2].as_ref().unwrap();
    assert!(again.effects.is_empty(), "a duplicate writes nothing");
    assert_eq!(
        again.outputs,
        first
            .outputs
            .iter()
            .filter(|o| matches!(o, TimelineEvent::Committed(_)))
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(view.conversation("g:1").unwrap().last_seq, 1);
}

#[test]
fn direct_conversations_exist_on_first_message_for_their_two_members_only() {
    let mut view = MemoryView::default();
    let results = run(
        &mut view,
        &Config::default(),
        &[accepted("m", 0, send("dm:a:b", "a"))],
    );
    let decision = results[0].as_ref().unwrap();
    assert!(matches!(&decision.outputs[0], TimelineEvent::Changed(c) if c.added == ["a", "b"]));
    assert_eq!(committed_seqs(&results), vec![1]);
    let mut fresh = MemoryView::default();
    let error = decide(
        &accepted("x", 0, send("dm:a:b", "c")),
        &fresh,
        &Config::default(),
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotMember);
    fresh.absorb(&[]);
}

#[test]
fn refusals_name_their_reason() {
    let config = Config::default();
    let mut view = MemoryView::default();
    run(
        &mut view,
        &config,
        &[
            accepted("c", 0, create("g:1", &["a", "b"], &["a"])),
            accepted("m", 0, send("g:1", "b")),
        ],
    );
    let check = |command: Command, code: ErrorCode| {
        let error = decide(&accepted("x", 1000, command), &view, &config).unwrap_err();
        assert_eq!(error.code, code, "{}", error.reason);
    };
    // A missing conversation answers like one the sender is not in.
    check(send("g:none", "a"), ErrorCode::NotMember);
    check(send("g:1", "mallory"), ErrorCode::NotMember);
    check(create("g:1", &["a"], &[]), ErrorCode::Conflict);
    check(
        Command::Read(ReadData {
            conversation_id: "g:1".into(),
            user_id: "a".into(),
            seq: 2,
        }),
        ErrorCode::ReadBeyondLastSeq,
    );
    check(
        Command::Edit(EditData {
            conversation_id: "g:1".into(),
            seq: 1,
            editor_id: "a".into(),
            body: json!({}),
        }),
        ErrorCode::Forbidden,
    );
    check(
        Command::Edit(EditData {
            conversation_id: "g:1".into(),
            seq: 9,
            editor_id: "b".into(),
            body: json!({}),
        }),
        ErrorCode::NotFound,
    );
    // A non-member's edit learns neither the author nor that seq 1 exists.
    for seq in [1, 9] {
        let edit = Command::Edit(EditData {
            conversation_id: "g:1".into(),
            seq,
            editor_id: "mallory".into(),
            body: json!({}),
        });
        let error = decide(&accepted("x", 1000, edit), &view, &config).unwrap_err();
        assert_eq!(error.code, ErrorCode::NotMember);
        assert_eq!(error.reason, "mallory is not a member of g:1");
    }
    check(
        Command::AddMembers(MembersData {
            conversation_id: "dm:a:b".into(),
            members: vec!["c".into()],
        }),
        ErrorCode::NotFound,
    );
}

#[test]
fn recall_window_and_admins() {
    let config = Config {
        recall_window_ms: 1000,
        ..Config::default()
    };
    let mut view = MemoryView::default();
    run(
        &mut view,
        &config,
        &[
            accepted("c", 0, create("g:1", &["a", "b", "c"], &["a"])),
            accepted("m", 0, send("g:1", "b")),
        ],
    );
    let recall = |actor: &str| {
        Command::Recall(RecallData {
            conversation_id: "g:1".into(),
            seq: 1,
            actor_id: actor.into(),
        })
    };
    assert!(
        decide(&accepted("r", 900, recall("b")), &view, &config).is_ok(),
        "sender within the window"
    );
    assert_eq!(
        decide(&accepted("r", 1500, recall("b")), &view, &config)
            .unwrap_err()
            .code,
        ErrorCode::RecallWindowExpired
    );
    assert_eq!(
        decide(&accepted("r", 500, recall("c")), &view, &config)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    let by_admin = decide(&accepted("r", 99_000, recall("a")), &view, &config).unwrap();
    view.absorb(&by_admin.effects);
    assert_eq!(
        decide(&accepted("r2", 99_000, recall("a")), &view, &config)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    let edit = Command::Edit(EditData {
        conversation_id: "g:1".into(),
        seq: 1,
        editor_id: "b".into(),
        body: json!({}),
    });
    assert_eq!(
        decide(&accepted("e", 99_000, edit), &view, &config)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
}

#[test]
fn growing_past_the_threshold_switches_to_read_diffusion() {
    let config = Config {
        large_group_threshold: 3,
        ..Config::default()
    };
    let mut view = MemoryView::default();
    let add = Command::AddMembers(MembersData {
        conversation_id: "g:1".into(),
        members: vec!["c".into(), "d".into(), "a".into()],
    });
    let results = run(
        &mut view,
        &config,
        &[
            accepted("c", 0, create("g:1", &["a", "b"], &[])),
            accepted("add", 1, add),
            accepted("m", 2, send("g:1", "d")),
        ],
    );
    let change = results[1].as_ref().unwrap();
    let TimelineEvent::Changed(changed) = &change.outputs[0] else {
        panic!()
    };
    assert_eq!(
        changed.added,
        vec!["c", "d"],
        "existing members are not added twice"
    );
    assert!(changed.mode_changed);
    assert_eq!(changed.diffusion, Diffusion::Read);
    let TimelineEvent::Committed(message) = &results[2].as_ref().unwrap().outputs[0] else {
        panic!()
    };
    assert_eq!(message.diffusion, Diffusion::Read);
    assert_eq!(view.conversation("g:1").unwrap().member_count, 4);
}

#[test]
fn edits_name_the_members_at_their_position() {
    let mut view = MemoryView::default();
    view.members.insert("g:1".into(), Default::default());
    let remove = Command::RemoveMembers(MembersData {
        conversation_id: "g:1".into(),
        members: vec!["c".into()],
    });
    let edit = Command::Edit(EditData {
        conversation_id: "g:1".into(),
        seq: 1,
        editor_id: "a".into(),
        body: json!({}),
    });
    let results = run(
        &mut view,
        &Config::default(),
        &[
            accepted("c", 0, create("g:1", &["a", "b", "c"], &[])),
            accepted("m", 1, send("g:1", "a")),
            accepted("e", 2, edit.clone()),
            accepted("r", 3, remove),
            accepted("e2", 4, edit),
        ],
    );
    let recipients = |index: usize| match &results[index].as_ref().unwrap().outputs[0] {
        TimelineEvent::Edited(edit) => edit.recipients.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        recipients(2),
        vec!["a", "b", "c"],
        "c was still a member at the first edit"
    );
    assert_eq!(recipients(4), vec!["a", "b"], "and no longer at the second");
}

/// Members loaded from the store mid-batch include the batch's own
/// earlier changes (replay applies a create and an edit in one batch).
#[test]
fn members_loaded_mid_batch_include_the_batch_so_far() {
    let mut view = MemoryView::default();
    run(
        &mut view,
        &Config::default(),
        &[accepted("c", 0, create("g:1", &["a", "b", "c"], &[]))],
    );
    let remove = Command::RemoveMembers(MembersData {
        conversation_id: "g:1".into(),
        members: vec!["b".into()],
    });
    run(&mut view, &Config::default(), &[accepted("r", 1, remove)]);
    // The store had nothing yet: the batch is not applied.
    view.load_members("g:1", vec![]);
    assert_eq!(view.members("g:1"), vec!["a", "c"]);
    let mut from_store = MemoryView::default();
    from_store.load_members("g:2", vec!["x".into(), "y".into()]);
    assert_eq!(from_store.members("g:2"), vec!["x", "y"]);
}

fn arbitrary_command() -> impl Strategy<Value = Command> {
    let user = prop::sample::select(vec!["a", "b", "c"]);
    let conversation = prop::sample::select(vec!["g:1", "dm:a:b"]);
    prop_oneof![
        (conversation.clone(), user.clone()).prop_map(|(c, u)| send(c, u)),
        (conversation.clone(), user.clone(), 1..4u64).prop_map(|(c, u, seq)| Command::Read(
            ReadData {
                conversation_id: c.into(),
                user_id: u.into(),
                seq
            }
        )),
        (conversation.clone(), user.clone(), 1..4u64).prop_map(|(c, u, seq)| Command::Recall(
            RecallData {
                conversation_id: c.into(),
                seq,
                actor_id: u.into()
            }
        )),
        (conversation, user.clone()).prop_map(|(c, u)| Command::RemoveMembers(MembersData {
            conversation_id: c.into(),
            members: vec![u.into()]
        })),
        Just(create("g:1", &["a", "b"], &["a"])),
    ]
}

/// Commands over ids an attacker picks: separators of our formats,
/// look-alike direct ids, someone else's name.
fn hostile_command() -> impl Strategy<Value = Command> {
    let id = prop::sample::select(vec![
        "a", "b", "mallory", "g:1", "dm:a:b", "dm:b:a", "dm:a:a", "x:y:z", "..", "@", "a.b",
    ]);
    let edit = |c: &str, u: &str, seq: u64| {
        Command::Edit(EditData {
            conversation_id: c.into(),
            seq,
            editor_id: u.into(),
            body: json!({"text": "x"}),
        })
    };
    prop_oneof![
        (id.clone(), id.clone()).prop_map(|(c, u)| send(c, u)),
        (id.clone(), id.clone(), 0..4u64).prop_map(move |(c, u, seq)| edit(c, u, seq)),
        (id.clone(), id.clone(), 0..4u64).prop_map(|(c, u, seq)| Command::Recall(RecallData {
            conversation_id: c.into(),
            seq,
            actor_id: u.into()
        })),
        (id.clone(), id.clone(), 0..4u64).prop_map(|(c, u, seq)| Command::Read(ReadData {
            conversation_id: c.into(),
            user_id: u.into(),
            seq
        })),
        (id.clone(), id.clone(), id).prop_map(|(c, a, b)| create(c, &[a, b], &[a])),
    ]
}

fn actor(command: &Command) -> Option<&str> {
    command.actor()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(im_events::testing::property_cases() / 2))]

    /// Any sequence of hostile commands: no panic, and a refusal for
    /// not being a member names nobody but the actor (it never tells
    /// who wrote a message or who is in a conversation).
    #[test]
    fn hostile_ids_never_panic_or_leak(commands in prop::collection::vec(hostile_command(), 1..24)) {
        let config = Config::default();
        let mut view = MemoryView::default();
        let events: Vec<Accepted> = commands.iter().cloned().enumerate().map(|(n, c)| accepted(&format!("h{n}"), n as i64, c)).collect();
        for (event, result) in events.iter().zip(run(&mut view, &config, &events)) {
            if let Err(error) = result {
                if error.code == ErrorCode::NotMember {
                    let actor = actor(&event.payload).unwrap_or_default();
                    let conversation = event.payload.conversation_id();
                    let rest = error.reason.replacen(actor, "", 1).replacen(&*conversation, "", 1);
                    for other in ["mallory", "a.b"] {
                        if other != actor && !conversation.contains(other) {
                            prop_assert!(!rest.contains(other), "{}", error.reason);
                        }
                    }
                }
            }
        }
    }
}

proptest! {
    /// Handling any sequence of events, each delivered once or twice in
    /// a row, ends in the same state and publishes the same first outputs
    /// as handling each once.
    #[test]
    fn handling_twice_equals_handling_once(commands in prop::collection::vec(arbitrary_command(), 1..20), repeat in prop::collection::vec(any::<bool>(), 20)) {
        let config = Config::default();
        let events: Vec<Accepted> = commands.into_iter().enumerate().map(|(n, c)| accepted(&format!("e{n}"), n as i64, c)).collect();
        let mut once = MemoryView::default();
        let once_results = run(&mut once, &config, &events);
        let mut twice = MemoryView::default();
        let mut doubled = Vec::new();
        for (event, again) in events.iter().zip(repeat.iter().cycle()) {
            doubled.push(event.clone());
            if *again {
                doubled.push(event.clone());
            }
        }
        let twice_results = run(&mut twice, &config, &doubled);
        // A repeat republishes the message it repeats, right after it.
        prop_assert_eq!(committed(&once_results), {
            let mut pairs = committed(&twice_results);
            pairs.dedup();
            pairs
        });
        prop_assert_eq!(format!("{:?}", sorted(&once.conversations)), format!("{:?}", sorted(&twice.conversations)));
        prop_assert_eq!(format!("{:?}", sorted(&once.messages)), format!("{:?}", sorted(&twice.messages)));
        prop_assert_eq!(format!("{:?}", sorted(&once.roles)), format!("{:?}", sorted(&twice.roles)));
    }
}

fn sorted<K: Ord + Clone, V: Clone>(map: &HashMap<K, V>) -> Vec<(K, V)> {
    let mut entries: Vec<(K, V)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}
