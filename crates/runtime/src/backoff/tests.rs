use super::*;

const B: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));

#[test]
fn delays_grow_to_the_cap_and_stay_within_half_of_it() {
    assert_eq!(B.ceiling(1), Duration::from_millis(100));
    assert_eq!(B.ceiling(2), Duration::from_millis(200));
    assert_eq!(B.ceiling(4), Duration::from_millis(800));
    assert_eq!(B.ceiling(5), Duration::from_secs(1));
    assert_eq!(B.ceiling(1_000), Duration::from_secs(1));
    for attempt in 1..12 {
        for key in ["a", "b", "stream:7", "notification-1"] {
            let delay = B.delay(attempt, key);
            let ceiling = B.ceiling(attempt);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{attempt} {key}: {delay:?}"
            );
            assert_eq!(delay, B.delay(attempt, key), "reproducible");
        }
    }
}

#[test]
fn callers_hit_at_once_do_not_come_back_together() {
    let delays: std::collections::BTreeSet<Duration> = (0..100)
        .map(|n| B.delay(3, &format!("event-{n}")))
        .collect();
    // 100 callers of the same attempt spread over the window instead of
    // one instant (without jitter: 1 distinct delay).
    assert!(delays.len() > 50, "{}", delays.len());
    let (low, high) = (delays.first().unwrap(), delays.last().unwrap());
    assert!(
        *high - *low > Duration::from_millis(150),
        "{low:?}..{high:?}"
    );
}
