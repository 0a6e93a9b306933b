use super::*;

/// Fails transiently for any batch containing the poison payload, or for
/// the first `flaky` calls.
struct Flaky {
    calls: std::sync::atomic::AtomicUsize,
    flaky: usize,
}

impl BatchHandler for Flaky {
    async fn handle(
        &self,
        _claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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
