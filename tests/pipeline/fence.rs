//! The store fence firing: a stale owner (paused, then resumed after its
//! partition moved to a newer epoch) cannot commit anything, and gives the
//! partition up. The dedupe handler runs against a real nats-server and a
//! real SQLite store.

use std::sync::Arc;

use im_harness::NatsServer;
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming};
use im_store::ConversationStore;
use serde_json::json;

/// An inbound event as dedupe reads it from IM_INGEST (unkeyed: admission
/// checks no key).
fn accepted(id: &str, event_type: &str, data: serde_json::Value) -> Incoming {
    let event = json!({"specversion": "1.0", "id": id, "source": "urn:test", "type": event_type, "time": "2026-01-01T00:00:00.000Z",
                       "datacontenttype": "application/json", "data": data});
    Incoming {
        subject: im_events::subjects::ingest_subject(event_type),
        headers: vec![],
        payload: serde_json::to_vec(&event).unwrap().into(),
        stream_seq: 1,
        delivered: 1,
        published_ms: 1_767_225_600_000,
        held_ms: 0,
    }
}

/// A nats-server of the test's own with the pipeline's streams.
async fn jetstream() -> (NatsServer, async_nats::jetstream::Context) {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    im_runtime::topology::ensure_streams(&js).await.unwrap();
    (nats, js)
}

/// Dedupe over `store`, its fast path's notices going to push's subjects.
fn dedupe_over(
    js: async_nats::jetstream::Context,
    store: Arc<dyn ConversationStore>,
) -> im_dedupe::Dedupe {
    im_dedupe::Dedupe {
        js,
        store,
        config: im_dedupe::decide::Config::default(),
        conversation_partitions: 16,
        user_partitions: 16,
        fast_path: true,
        online: None,
    }
}

/// The group `conversation` of a and b, made by `claim`'s owner.
async fn create_group(dedupe: &im_dedupe::Dedupe, claim: &Claim, conversation: &str) {
    dedupe
        .handle(
            claim,
            vec![accepted(
                "c1",
                "im.conversation.create",
                json!({"conversation_id": conversation, "kind": "group", "members": ["a", "b"]}),
            )],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stale_owner_is_fenced_and_commits_nothing() {
    let (_nats, js) = jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ConversationStore> = Arc::new(
        im_store::sqlite::conversations_in(dir.path(), Some(im_store::sqlite::Durability::Normal))
            .unwrap(),
    );
    let dedupe = dedupe_over(js, store.clone());
    // The stale owner took the partition at epoch 5; the new owner at 9.
    let stale = Claim::unleased("dedupe", 3, 5);
    let current = Claim::unleased("dedupe", 3, 9);
    create_group(&dedupe, &current, "g:fence").await;
    dedupe
        .handle(&current, vec![accepted("s1", "im.message.send", json!({"conversation_id": "g:fence", "sender_id": "a", "kind": "text", "body": {"text": "new owner"}}))])
        .await
        .unwrap();
    // The stale owner wakes up with a batch it fetched before it paused.
    let result = dedupe
        .handle(&stale, vec![accepted("s2", "im.message.send", json!({"conversation_id": "g:fence", "sender_id": "b", "kind": "text", "body": {"text": "stale owner"}}))])
        .await;
    match result {
        Err(HandlerError::Fenced(reason)) => {
            assert!(
                reason.contains("epoch 9") && reason.contains("not 5"),
                "{reason}"
            )
        }
        other => panic!("the stale owner was not fenced: {other:?}"),
    }
    let history = store.history("g:fence", None, 10).unwrap();
    assert_eq!(
        history.len(),
        1,
        "nothing of the stale owner was committed: {history:#?}"
    );
    assert_eq!(history[0].body, json!({"text": "new owner"}));
    assert!(store.idempotency("urn:test", "s2").unwrap().is_none());
}

/// The other half of fencing a stale owner: the JetStream side. Each owner
/// reads through a consumer of its own epoch; a newer owner's take-over
/// deletes the older consumers, so a resumed stale owner can neither fetch
/// the messages the new owner is about to handle (and publish them ahead of
/// it) nor nak them back behind the new owner's later ones. The new owner
/// starts after the last message the old one acknowledged in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_cannot_fetch_through_its_successors_consumer() {
    use futures::StreamExt;
    use im_runtime::topology::{take_over_consumer, topology};
    let (_nats, js) = jetstream().await;
    let def = topology().consumer("unread").unwrap().clone();
    for n in 1..=6 {
        js.publish(format!("im.delivery.5.message.{n}"), format!("{n}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    async fn fetch(
        consumer: &async_nats::jetstream::consumer::PullConsumer,
        max: usize,
    ) -> Result<Vec<async_nats::jetstream::Message>, String> {
        let mut batch = consumer
            .fetch()
            .max_messages(max)
            .expires(std::time::Duration::from_millis(300))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = Vec::new();
        while let Some(next) = batch.next().await {
            messages.push(next.map_err(|e| e.to_string())?);
        }
        Ok(messages)
    }
    // The owner at epoch 5 handles 1 and 2, then holds 3 and 4 unacked
    // (paused mid-batch).
    let old = take_over_consumer(&js, &def, 5, 5).await.unwrap();
    for message in fetch(&old, 2).await.unwrap() {
        message.double_ack().await.unwrap();
    }
    let held = fetch(&old, 2).await.unwrap();
    assert_eq!(held.len(), 2);
    // Epoch 9 takes over: it starts at 3, in order.
    let new = take_over_consumer(&js, &def, 5, 9).await.unwrap();
    let first = fetch(&new, 1).await.unwrap();
    assert_eq!(&first[0].payload[..], b"3");
    // The resumed old owner: its consumer is gone, so it fetches nothing,
    // and its nak does not put 3 and 4 back behind the new owner's 5 and 6.
    let stale = fetch(&old, 10).await;
    assert!(
        stale.as_ref().map(|m| m.is_empty()).unwrap_or(true),
        "the stale owner fetched {:?}",
        stale.map(|m| m.len())
    );
    for message in &held {
        let _ = message
            .ack_with(async_nats::jetstream::AckKind::Nak(None))
            .await;
    }
    first[0].double_ack().await.unwrap();
    let rest = fetch(&new, 10).await.unwrap();
    let order: Vec<String> = rest
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).to_string())
        .collect();
    assert_eq!(
        order,
        ["4", "5", "6"],
        "the new owner sees the rest in order"
    );
    // A take-over by the stale epoch is refused, and one consumer remains.
    let again = take_over_consumer(&js, &def, 5, 5).await;
    assert!(
        matches!(
            again,
            Err(im_runtime::topology::TakeOverError::Superseded(_))
        ),
        "a stale take-over must be refused"
    );
    let stream = js.get_stream("IM_DELIVERY").await.unwrap();
    let names: Vec<String> = stream.consumer_names().map(|n| n.unwrap()).collect().await;
    assert_eq!(names, ["unread-p5-e9"]);
    // Another partition's consumers are not touched by this one's take-over.
    take_over_consumer(&js, &def, 50 % 16, 3).await.unwrap();
    take_over_consumer(&js, &def, 5, 10).await.unwrap();
    let mut names: Vec<String> = stream.consumer_names().map(|n| n.unwrap()).collect().await;
    names.sort();
    assert_eq!(names, ["unread-p2-e3", "unread-p5-e10"]);
    // A claimant at epoch 7 listed before epoch 10 created its consumer, and
    // created its own only afterwards: left alone, nobody would ever read it
    // and its messages would stay pending. The newer owner's next look
    // (every take-over checks again after creating) removes it.
    let mut late = im_runtime::topology::consumer_config(&def, 5);
    late.durable_name = Some(im_runtime::topology::epoch_durable_name(&def, 5, 7));
    stream.create_consumer(late).await.unwrap();
    take_over_consumer(&js, &def, 5, 10).await.unwrap();
    let mut names: Vec<String> = stream.consumer_names().map(|n| n.unwrap()).collect().await;
    names.sort();
    assert_eq!(
        names,
        ["unread-p2-e3", "unread-p5-e10"],
        "the late consumer is gone"
    );
}

/// A message of a conversation that reaches unread after later ones: a
/// publish retried across a leader change lands behind the ones that
/// followed it (and a delivery lost on its way comes back only after
/// `ack_wait`, behind newer ones). The real unread handler holds the later
/// ones of that user's conversation until it arrives, so the sync log stays
/// in seq order and the late one is not taken for a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_delivery_is_waited_for_not_skipped() {
    use im_events::{
        CommittedMessage, ConversationChanged, ConversationKind, Delivery, DeliveryData,
        DeliveryPayload, Diffusion, MessageKind, TimelineEvent,
    };
    use im_store::UserStore;
    use std::time::Duration;

    let (_nats, js) = jetstream().await;
    let client = async_nats::connect(_nats.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        im_store::sqlite::SqliteUserStore::open_writer(
            &dir.path().join("users.db"),
            im_store::sqlite::Durability::Normal,
        )
        .unwrap(),
    );
    let handler = Arc::new(im_unread::Unread {
        retention: None,
        store: store.clone(),
        client: None,
        conversations: None,
    });
    let shutdown = im_runtime::Shutdown::new();
    let runner = tokio::spawn(im_runtime::run_function(
        client,
        "unread",
        "test-owner".into(),
        Duration::from_secs(6),
        handler.clone(),
        shutdown.clone(),
    ));
    let publish = |event: TimelineEvent| {
        let js = js.clone();
        async move {
            let delivery = Delivery::new(
                "urn:test",
                event.effect_key(),
                "2026-01-01T00:00:00.000Z",
                DeliveryPayload::Delivery(DeliveryData {
                    users: vec!["u".into()],
                    event,
                    trace: None,
                }),
            );
            js.publish(
                "im.delivery.5.message",
                serde_json::to_vec(&delivery).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    let message = |seq: u64| {
        TimelineEvent::Committed(CommittedMessage {
            message_id: format!("m{seq}"),
            conversation_id: "g:late".into(),
            seq,
            sender_id: "x".into(),
            source: "urn:test".into(),
            event_id: format!("e{seq}"),
            sent_at: "2026-01-01T00:00:00.000Z".into(),
            kind: MessageKind::Text,
            body: json!({"text": seq}),
            mentions: vec![],
            diffusion: Diffusion::Write,
            reply_to: None,
        })
    };
    let log = || -> Vec<u64> {
        store
            .sync_items("u", 0, 100)
            .unwrap()
            .iter()
            .map(|r| serde_json::to_value(&r.item).unwrap())
            .filter(|item| item["type"] == "message" && item["conversation_id"] == "g:late")
            .map(|item| item["seq"].as_u64().unwrap())
            .collect()
    };
    publish(TimelineEvent::Changed(ConversationChanged {
        conversation_id: "g:late".into(),
        kind: ConversationKind::Group,
        title: None,
        added: vec!["u".into(), "x".into()],
        removed: vec![],
        at_seq: 0,
        diffusion: Diffusion::Write,
        mode_changed: false,
        members: vec![],
        source: "urn:test".into(),
        event_id: "create".into(),
    }))
    .await;
    publish(message(1)).await;
    im_pipeline_tests::eventually(Duration::from_secs(15), || (log() == [1]).then_some(())).await;
    publish(message(2)).await;
    im_pipeline_tests::eventually(Duration::from_secs(15), || (log() == [1, 2]).then_some(()))
        .await;
    // 3 is late: 4 and 5 are stored before it.
    publish(message(4)).await;
    publish(message(5)).await;
    // Another conversation's message behind them is applied and acked at
    // once, not left for JetStream to redeliver after ack_wait (the loop
    // once stopped settling a batch at its first held message).
    let other = match message(1) {
        TimelineEvent::Committed(mut committed) => {
            committed.conversation_id = "dm:u:x".into();
            committed.message_id = "other-1".into();
            TimelineEvent::Committed(committed)
        }
        _ => unreachable!(),
    };
    publish(other).await;
    im_pipeline_tests::eventually(Duration::from_secs(15), || {
        store
            .user_conversation("u", "dm:u:x")
            .unwrap()
            .map(|row| row.last_seq)
            .filter(|&seq| seq == 1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(log(), [1, 2], "4 and 5 did not overtake 3");
    let stream = js.get_stream("IM_DELIVERY").await.unwrap();
    let name = futures::StreamExt::collect::<Vec<_>>(stream.consumer_names())
        .await
        .into_iter()
        .map(Result::unwrap)
        .find(|name| name.starts_with("unread-p5"))
        .unwrap();
    let info = stream.consumer_info(&name).await.unwrap();
    assert_eq!(
        info.num_ack_pending, 2,
        "only the held 4 and 5 wait unacknowledged: {info:?}"
    );

    publish(message(3)).await;
    im_pipeline_tests::eventually(Duration::from_secs(15), || (log().len() == 5).then_some(()))
        .await;
    assert_eq!(log(), [1, 2, 3, 4, 5]);
    let row = store.user_conversation("u", "g:late").unwrap().unwrap();
    assert_eq!((row.last_seq, row.unread()), (5, 5));
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), runner).await;
}

/// A dedupe store opened [`Durability::Deferred`] (`strict`) whose fsync
/// can be made to fail: every other call goes to the SQLite store.
struct SyncGate {
    inner: im_store::sqlite::SqliteConversationStore,
    fail: std::sync::atomic::AtomicBool,
}

impl ConversationStore for SyncGate {
    fn conversation(
        &self,
        id: &str,
    ) -> im_store::StoreResult<Option<im_store::ConversationRecord>> {
        self.inner.conversation(id)
    }
    fn memberships(
        &self,
        id: &str,
        users: &[String],
    ) -> im_store::StoreResult<Vec<im_store::Membership>> {
        self.inner.memberships(id, users)
    }
    fn members_at(&self, id: &str, seq: u64) -> im_store::StoreResult<Vec<String>> {
        self.inner.members_at(id, seq)
    }
    fn current_members(&self, id: &str) -> im_store::StoreResult<Vec<String>> {
        self.inner.current_members(id)
    }
    fn idempotency(
        &self,
        source: &str,
        id: &str,
    ) -> im_store::StoreResult<Option<im_store::IdempotencyRecord>> {
        self.inner.idempotency(source, id)
    }
    fn message(
        &self,
        id: &str,
        seq: u64,
    ) -> im_store::StoreResult<Option<im_store::StoredMessage>> {
        self.inner.message(id, seq)
    }
    fn history(
        &self,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> im_store::StoreResult<Vec<im_store::StoredMessage>> {
        self.inner.history(id, before, limit)
    }
    fn reactions(
        &self,
        id: &str,
        from: u64,
        to: u64,
    ) -> im_store::StoreResult<Vec<im_store::Reaction>> {
        self.inner.reactions(id, from, to)
    }
    fn blocked(&self, user: &str, blocked: &str) -> im_store::StoreResult<bool> {
        self.inner.blocked(user, blocked)
    }
    fn receipts(&self, id: &str) -> im_store::StoreResult<Vec<im_store::Receipt>> {
        self.inner.receipts(id)
    }
    fn receipt(&self, id: &str, user: &str) -> im_store::StoreResult<Option<im_store::Receipt>> {
        self.inner.receipt(id, user)
    }
    fn apply(
        &self,
        fence: &im_store::Fence,
        effects: &[im_store::ConversationEffect],
    ) -> im_store::StoreResult<()> {
        self.inner.apply(fence, effects)
    }
    fn sync(&self) -> im_store::StoreResult<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(im_store::StoreError::Backend(
                "fsync: input/output error".into(),
            ));
        }
        self.inner.sync()
    }
    fn sync_deferred(&self) -> bool {
        self.inner.sync_deferred()
    }
    fn dump(&self) -> im_store::StoreResult<Vec<String>> {
        self.inner.dump()
    }
    fn archive(
        &self,
        policy: &im_store::TieringPolicy,
        now_ms: i64,
        progress: &mut dyn FnMut(&im_store::ArchiveReport),
    ) -> im_store::StoreResult<im_store::ArchiveReport> {
        self.inner.archive(policy, now_ms, progress)
    }
    fn tier_stats(&self) -> im_store::StoreResult<im_store::TierStats> {
        self.inner.tier_stats()
    }
}

/// Under `strict`, dedupe commits without an fsync, pushes the commit's
/// messages to online devices, and only then syncs: the sender's verdict,
/// the timeline and the ack wait for the sync. A sync that fails answers
/// nobody and acks nothing (the batch comes again); the input redelivered
/// finds its commit and is answered with the seq the devices already saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_strict_devices_get_a_commit_before_its_fsync_and_the_sender_after() {
    use futures::StreamExt;
    let (_nats, js) = jetstream().await;
    let client = js.client();
    let dir = tempfile::tempdir().unwrap();
    let inner = im_store::sqlite::conversations_in(
        dir.path(),
        Some(im_store::sqlite::Durability::Deferred),
    )
    .unwrap();
    assert!(inner.sync_deferred());
    let gate = Arc::new(SyncGate {
        inner,
        fail: std::sync::atomic::AtomicBool::new(false),
    });
    let store: Arc<dyn ConversationStore> = gate.clone();
    let dedupe = dedupe_over(js.clone(), store.clone());
    let claim = Claim::unleased("dedupe", 3, 1);
    create_group(&dedupe, &claim, "g:deferred").await;
    let mut pushes = client.subscribe("im.push.>").await.unwrap();
    let mut verdicts = client.subscribe("im.gw.test.reply.>").await.unwrap();
    let mut timeline = client.subscribe("im.events.>").await.unwrap();
    client.flush().await.unwrap();
    let mut send = accepted(
        "s1",
        "im.message.send",
        json!({"conversation_id": "g:deferred", "sender_id": "a", "kind": "text", "body": {"text": "hi"}}),
    );
    send.headers = vec![(
        im_runtime::publish::REPLY_HEADER.to_string(),
        "im.gw.test.reply.1".to_string(),
    )];
    gate.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = dedupe.handle(&claim, vec![send.clone()]).await;
    assert!(
        failed.is_err(),
        "a batch whose sync failed was settled: {failed:?}"
    );
    let wait = std::time::Duration::from_millis(500);
    let pushed = tokio::time::timeout(wait, pushes.next())
        .await
        .expect("the online members got nothing before the sync")
        .unwrap();
    let pushed: serde_json::Value = serde_json::from_slice(&pushed.payload).unwrap();
    assert_eq!(pushed[0]["item"]["seq"], json!(1), "{pushed}");
    assert!(
        tokio::time::timeout(wait, verdicts.next()).await.is_err(),
        "the sender was answered before its commit was synced"
    );
    assert!(
        tokio::time::timeout(wait, timeline.next()).await.is_err(),
        "the timeline went on before the commit was synced"
    );
    // The batch comes again, and the sync works this time.
    gate.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    dedupe.handle(&claim, vec![send]).await.unwrap();
    let verdict = tokio::time::timeout(wait, verdicts.next())
        .await
        .expect("no verdict after the sync")
        .unwrap();
    let verdict: serde_json::Value = serde_json::from_slice(&verdict.payload).unwrap();
    assert_eq!(verdict["message"]["seq"], json!(1), "{verdict}");
    assert_eq!(store.history("g:deferred", None, 10).unwrap().len(), 1);
}

/// What the partition loop's check of lost deliveries relies on, against a
/// real nats-server: a delivery that never reaches the consumer's reader
/// leaves a gap in the consumer sequence of the next ones (with
/// `AckPolicy::All`, acking those would cover it for good), and a reset to
/// the ack floor makes it again, numbered after what the reset reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_lost_in_flight_shows_as_a_gap_and_a_reset_makes_it_again() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use im_pipeline_tests::fetch_batch;
    use im_runtime::consumer::DeliveryOrder;

    let (_nats, js) = jetstream().await;
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "GAPS".into(),
            subjects: vec!["gaps.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    for n in 1..=3 {
        js.publish(format!("gaps.{n}"), n.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("gaps".into()),
            ack_policy: AckPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut order = DeliveryOrder::after(consumer.cached_info().delivered.consumer_sequence);
    // Delivery 1 is made and lost on its way: nobody handles it.
    let lost = fetch_batch(&consumer, 1).await;
    assert_eq!(lost.len(), 1);
    drop(lost);
    let later = fetch_batch(&consumer, 2).await;
    assert_eq!(
        later.iter().map(|m| m.payload.to_vec()).collect::<Vec<_>>(),
        [b"2".to_vec(), b"3".to_vec()]
    );
    assert_eq!(order.gap(&later), Some(1), "the lost delivery is seen");
    // Starting again from the ack floor delivers it again, first, and the
    // count continues from what the reset says.
    consumer.reset(None).await.unwrap();
    let mut order = DeliveryOrder::after(consumer.cached_info().delivered.consumer_sequence);
    let again = fetch_batch(&consumer, 3).await;
    assert_eq!(
        again.iter().map(|m| m.payload.to_vec()).collect::<Vec<_>>(),
        [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
    assert_eq!(
        order.gap(&again),
        None,
        "{:?}",
        again
            .iter()
            .map(|m| m.info().unwrap().consumer_sequence)
            .collect::<Vec<_>>()
    );
}
