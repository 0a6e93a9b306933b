use super::*;
use im_events::{CommittedMessage, ConversationChanged, ConversationKind, MessageKind, ReadMarked};
use std::collections::HashMap;

struct Fixed(HashMap<String, Vec<String>>);
impl Members for Fixed {
    fn members_at(
        &self,
        conversation_id: &str,
        _seq: u64,
    ) -> Result<Vec<String>, im_store::StoreError> {
        Ok(self.0.get(conversation_id).cloned().unwrap_or_default())
    }
}

fn committed(diffusion: Diffusion) -> TimelineEvent {
    TimelineEvent::Committed(CommittedMessage {
        message_id: "m".into(),
        conversation_id: "g".into(),
        seq: 1,
        sender_id: "u0".into(),
        source: "s".into(),
        event_id: "e".into(),
        sent_at: "t".into(),
        kind: MessageKind::Text,
        body: serde_json::json!({}),
        mentions: vec![],
        diffusion,
        reply_to: None,
    })
}

fn group(n: usize) -> Fixed {
    Fixed(HashMap::from([(
        "g".to_string(),
        (0..n).map(|i| format!("u{i}")).collect(),
    )]))
}

#[test]
fn write_diffusion_reaches_every_member_once_grouped_by_partition() {
    let event = committed(Diffusion::Write);
    let users = recipients(&event, &group(50)).unwrap();
    assert_eq!(users.len(), 50);
    let out = deliveries(&event, users, 16, "t");
    assert!(out.len() <= 16);
    let mut all: Vec<String> = out
        .iter()
        .flat_map(|(_, _, d)| match &d.payload {
            DeliveryPayload::Delivery(data) => data.users.clone(),
            DeliveryPayload::Deliveries(_) | DeliveryPayload::Materialize(_) => vec![],
        })
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 50, "each member exactly once");
    for (subject, _, d) in &out {
        let DeliveryPayload::Delivery(data) = &d.payload else {
            panic!("fanout makes deliveries only")
        };
        for user in &data.users {
            assert_eq!(
                subject,
                &delivery_subject(partition_of(user, 16), "message")
            );
        }
    }
}

#[test]
fn a_batch_costs_one_write_per_user_partition() {
    let events: Vec<(TimelineEvent, Vec<String>, Option<im_events::Trace>)> = (1..=50u64)
        .map(|seq| {
            let TimelineEvent::Committed(mut message) = committed(Diffusion::Write) else {
                unreachable!()
            };
            message.seq = seq;
            let users = vec![format!("a{}", seq % 7), format!("b{}", seq % 5)];
            (TimelineEvent::Committed(message), users, None)
        })
        .collect();
    let out = batch_deliveries(&events, 4, "t");
    assert!(
        out.len() <= 4,
        "one message per user partition: {}",
        out.len()
    );
    let mut per_user: HashMap<String, Vec<u64>> = HashMap::new();
    for (subject, _, delivery) in &out {
        for data in delivery.payload.clone().into_data() {
            let TimelineEvent::Committed(message) = &data.event else {
                panic!()
            };
            for user in &data.users {
                assert_eq!(
                    subject.split('.').nth(2).unwrap(),
                    partition_of(user, 4).to_string()
                );
                per_user.entry(user.clone()).or_default().push(message.seq);
            }
        }
    }
    for seqs in per_user.values() {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "each user's events stay in order"
        );
    }
    let total: usize = per_user.values().map(Vec::len).sum();
    assert_eq!(total, 100, "every recipient of every event exactly once");
    assert_eq!(
        batch_deliveries(&events, 4, "t")
            .iter()
            .map(|d| d.1.clone())
            .collect::<Vec<_>>(),
        out.iter().map(|d| d.1.clone()).collect::<Vec<_>>(),
        "ids are deterministic"
    );
    let single = batch_deliveries(&events[..1], 4, "t");
    assert!(single.iter().all(|(_, id, d)| id.starts_with("dl:")
        && matches!(d.payload, DeliveryPayload::Delivery(_))
        || single.len() > 1));
}

#[test]
fn read_diffusion_makes_no_member_copies() {
    let event = committed(Diffusion::Read);
    assert_eq!(recipients(&event, &group(1000)).unwrap(), vec!["u0"]);
}

#[test]
fn read_diffusion_reaches_mentioned_members_only() {
    let TimelineEvent::Committed(mut message) = committed(Diffusion::Read) else {
        unreachable!()
    };
    message.mentions = vec!["u7".into(), "u999".into(), "stranger".into()];
    let users = recipients(&TimelineEvent::Committed(message), &group(1000)).unwrap();
    assert_eq!(
        users,
        vec!["u0", "u7", "u999"],
        "members mentioned, and the sender"
    );
}

#[test]
fn user_events_go_to_that_user_and_membership_to_the_affected() {
    let read = TimelineEvent::Read(ReadMarked {
        conversation_id: "g".into(),
        user_id: "u3".into(),
        seq: 1,
        source: "s".into(),
        event_id: "e".into(),
        receipt_to: vec![],
    });
    assert_eq!(recipients(&read, &group(5)).unwrap(), vec!["u3"]);
    let change = |mode_changed| {
        TimelineEvent::Changed(ConversationChanged {
            conversation_id: "g".into(),
            kind: ConversationKind::Group,
            title: None,
            added: vec!["new".into()],
            removed: vec!["gone".into()],
            at_seq: 3,
            diffusion: Diffusion::Write,
            mode_changed,
            members: if mode_changed {
                (0..5)
                    .map(|i| format!("u{i}"))
                    .chain(["new".to_string()])
                    .collect()
            } else {
                vec![]
            },
            source: "s".into(),
            event_id: "e".into(),
        })
    };
    assert_eq!(
        recipients(&change(false), &group(5)).unwrap(),
        vec!["gone", "new"]
    );
    assert_eq!(
        recipients(&change(true), &group(5)).unwrap().len(),
        7,
        "every member and the removed one"
    );
}

#[test]
fn edits_go_to_the_recipients_dedupe_named() {
    let edit = TimelineEvent::Edited(im_events::MessageEdited {
        recipients: vec!["a".into(), "b".into()],
        conversation_id: "g".into(),
        seq: 1,
        message_id: "m".into(),
        editor_id: "a".into(),
        body: serde_json::json!({}),
        edited_at: "t".into(),
        source: "s".into(),
        event_id: "e".into(),
    });
    // Whatever the membership is now.
    assert_eq!(recipients(&edit, &group(50)).unwrap(), vec!["a", "b"]);
}

#[test]
fn deliveries_are_deterministic() {
    let event = committed(Diffusion::Write);
    let users = recipients(&event, &group(20)).unwrap();
    assert_eq!(
        deliveries(&event, users.clone(), 16, "t"),
        deliveries(&event, users, 16, "t")
    );
}
