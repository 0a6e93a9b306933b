use super::*;

/// Fails transiently for any batch containing the poison payload, or for
/// the first `flaky` calls (as a broker outage, if `outage`).
struct Flaky {
    calls: std::sync::atomic::AtomicUsize,
    flaky: usize,
    outage: bool,
}

impl BatchHandler for Flaky {
    async fn handle(
        &self,
        _claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if call < self.flaky && self.outage {
            return Err(crate::publish::PublishError::Failed(format!(
                "publish ack: timed out (call {call})"
            ))
            .into());
        }
        if call < self.flaky || batch.iter().any(|m| m.payload.as_ref() == b"poison") {
            return Err(HandlerError::Transient(format!("failure on call {call}")));
        }
        Ok(batch.iter().map(|_| Outcome::Done).collect())
    }
}

fn incoming(payload: &'static [u8]) -> Incoming {
    Incoming {
        subject: "s".into(),
        headers: vec![],
        payload: Bytes::from_static(payload),
        stream_seq: 1,
        delivered: 1,
        published_ms: 0,
        held_ms: 0,
    }
}

async fn run_flaky(flaky: usize, batch: Vec<Incoming>) -> (Vec<Outcome>, usize, usize) {
    let handler = Flaky {
        calls: Default::default(),
        flaky,
        outage: false,
    };
    let kept_alive = std::sync::atomic::AtomicUsize::new(0);
    let keep_alive = |_index: usize| {
        kept_alive.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {}
    };
    let policy = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(2),
    };
    let claim = Claim::unleased("test", 0, 1);
    let outcomes = handle_in_order(
        &handler,
        &claim,
        batch,
        0,
        &keep_alive,
        policy,
        &Shutdown::new(),
    )
    .await
    .unwrap();
    (
        outcomes,
        handler.calls.load(std::sync::atomic::Ordering::SeqCst),
        kept_alive.load(std::sync::atomic::Ordering::SeqCst),
    )
}

#[tokio::test]
async fn transient_failures_are_retried_in_place() {
    let (outcomes, calls, kept_alive) = run_flaky(2, vec![incoming(b"a"), incoming(b"b")]).await;
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Done)));
    assert_eq!(calls, 3);
    assert_eq!(
        kept_alive, 4,
        "both messages marked in progress after each failure"
    );
}

#[tokio::test]
async fn a_poison_message_is_isolated_and_given_up_after_the_attempts() {
    let (outcomes, calls, _) =
        run_flaky(0, vec![incoming(b"a"), incoming(b"poison"), incoming(b"c")]).await;
    assert!(matches!(outcomes[0], Outcome::Done));
    assert!(matches!(&outcomes[1], Outcome::Retry(reason) if reason.starts_with("failure")));
    assert!(matches!(outcomes[2], Outcome::Done));
    assert_eq!(
        calls,
        3 + 1 + 3 + 1,
        "three batch attempts, then each message alone"
    );
}

#[tokio::test]
async fn shutdown_interrupts_the_wait() {
    let handler = Flaky {
        calls: Default::default(),
        flaky: usize::MAX,
        outage: false,
    };
    let shutdown = Shutdown::new();
    shutdown.trigger();
    let policy = RetryPolicy {
        attempts: 3,
        base: Duration::from_secs(60),
        cap: Duration::from_secs(60),
    };
    let result = handle_in_order(
        &handler,
        &Claim::unleased("t", 0, 1),
        vec![incoming(b"a")],
        0,
        &|_| async {},
        policy,
        &shutdown,
    )
    .await;
    assert!(matches!(result, Err(HandlerError::Transient(_))));
}

#[test]
fn backoff_grows_and_is_capped() {
    // Jittered within [d/2, d] of 250 ms · 2^(n-1), capped at 30 s.
    let within = |attempt: i64, ceiling: Duration| {
        let delay = backoff(attempt, "k");
        assert!(
            delay >= ceiling / 2 && delay <= ceiling,
            "{attempt}: {delay:?}"
        );
    };
    within(1, Duration::from_millis(250));
    within(2, Duration::from_millis(500));
    within(8, Duration::from_secs(30));
    within(100, Duration::from_secs(30));
}

#[tokio::test]
async fn a_broker_outage_longer_than_the_attempts_dead_letters_nothing() {
    let handler = Flaky {
        calls: Default::default(),
        flaky: 10,
        outage: true,
    };
    let policy = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(2),
    };
    let kept_alive = std::sync::atomic::AtomicUsize::new(0);
    let keep_alive = |_index: usize| {
        kept_alive.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {}
    };
    let outcomes = handle_in_order(
        &handler,
        &Claim::unleased("test", 0, 1),
        vec![incoming(b"a"), incoming(b"b")],
        0,
        &keep_alive,
        policy,
        &Shutdown::new(),
    )
    .await
    .unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Done)),
        "{outcomes:?}"
    );
    assert_eq!(
        handler.calls.load(std::sync::atomic::Ordering::SeqCst),
        11,
        "ten outages, then the whole batch at once"
    );
    assert_eq!(kept_alive.load(std::sync::atomic::Ordering::SeqCst), 20);
}

#[test]
fn publish_failures_are_outages_and_a_full_store_is_a_failure() {
    use crate::publish::PublishError;
    assert!(matches!(
        HandlerError::from(PublishError::Failed("no responders".into())),
        HandlerError::Unavailable(_)
    ));
    assert!(matches!(
        HandlerError::from(PublishError::StorageFull("maximum bytes exceeded".into())),
        HandlerError::Transient(_)
    ));
}

#[test]
fn after_an_outage_a_batch_is_retried_within_two_seconds() {
    let policy = RetryPolicy::standard();
    for outage in [1, 5, 8, 50] {
        let delay = policy.unavailable_delay(outage, "dedupe:3");
        assert!(delay <= UNAVAILABLE_CAP, "{outage}: {delay:?}");
    }
    assert!(policy.unavailable_delay(1, "dedupe:3") <= Duration::from_millis(250));
    // A failure of the batch itself still backs off to half a minute.
    assert!(policy.delay(8, "dedupe:3") >= Duration::from_secs(15));
}

#[test]
fn a_delivery_that_never_came_is_a_gap() {
    let mut order = DeliveryOrder::after(4);
    assert_eq!(order.accept(5), Ok(()));
    assert_eq!(order.accept(6), Ok(()));
    assert_eq!(order.accept(8), Err(7), "delivery 7 was made and lost");
    // An older delivery (one already counted) is no gap.
    let mut order = DeliveryOrder::after(10);
    assert_eq!(order.accept(10), Ok(()));
    assert_eq!(order.accept(11), Ok(()));
    assert_eq!(order.accept(12), Ok(()));
}

#[tokio::test]
async fn an_outage_outlasting_the_lease_gives_the_partition_up() {
    let handler = Flaky {
        calls: Default::default(),
        flaky: usize::MAX,
        outage: true,
    };
    let claim = Claim::unleased("test", 0, 1);
    claim.revoke();
    let policy = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(2),
    };
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        handle_in_order(
            &handler,
            &claim,
            vec![incoming(b"a")],
            0,
            &|_| async {},
            policy,
            &Shutdown::new(),
        ),
    )
    .await
    .expect("an outage must not outlive the claim");
    assert!(matches!(result, Err(HandlerError::Fenced(_))), "{result:?}");
}
