use super::*;

#[test]
fn presence_expires_without_a_delete() {
    let mut presence = Presence::default();
    presence.seen("bob", "phone", 1_000, "gw-a");
    assert!(presence.is_online("bob", 20_000, 30_000));
    assert!(
        !presence.is_online("bob", 40_000, 30_000),
        "a dead gateway's entry ages out"
    );
    presence.seen("bob", "laptop", 39_000, "gw-b");
    assert!(presence.device_online("bob", "laptop", 40_000, 30_000));
    assert!(!presence.device_online("bob", "phone", 40_000, 30_000));
    assert!(!presence.device_online("bob", "tablet", 40_000, 30_000));
    assert!(presence.is_online("bob", 40_000, 30_000));
    presence.gone("bob", "laptop");
    presence.gone("bob", "phone");
    assert!(!presence.is_online("bob", 40_000, 30_000));
    assert!(!presence.is_online("carol", 0, 30_000));
}

#[test]
fn the_view_forgets_devices_that_stopped_refreshing() {
    let mut presence = Presence::default();
    for n in 0..1000 {
        presence.seen(&format!("u{n}"), "phone", 1_000, "gw-a");
    }
    presence.seen("bob", "phone", 1_000, "gw-a");
    presence.seen("bob", "laptop", 35_000, "gw-b");
    assert_eq!(presence.len(), 1002);
    assert_eq!(presence.sweep(40_000, 30_000), 1001);
    assert_eq!(presence.len(), 1);
    assert!(presence.device_online("bob", "laptop", 40_000, 30_000));
    assert_eq!(presence.sweep(40_000, 30_000), 0, "what is fresh stays");
    assert_eq!(presence.sweep(100_000, 30_000), 1);
    assert!(presence.is_empty());
}

#[test]
fn pushes_go_to_each_gateway_holding_a_fresh_device_once() {
    let mut presence = Presence::default();
    presence.seen("bob", "phone", 10_000, "gw-a");
    presence.seen("bob", "laptop", 10_000, "gw-b");
    presence.seen("bob", "tablet", 10_000, "gw-a");
    presence.seen("bob", "old", 1_000, "gw-c");
    let mut gateways = presence.gateways("bob", 20_000, 15_000);
    gateways.sort();
    assert_eq!(gateways, ["gw-a", "gw-b"]);
    let value = presence_value("bob", "phone", "gw-a");
    assert_eq!(gateway_of(value.as_bytes()), "gw-a");
}

/// A watch that fails at the start (a node restarting) or ends later is
/// started again, and the view counts as current once any attempt caught
/// up. Before, the first failure ended the follower for good: offline ran
/// on with no push registrations, flushed what was due to "no devices" and
/// lost the notifications (chaos seed 1796321796689).
#[tokio::test]
async fn a_watch_that_fails_or_ends_is_started_again_until_it_is_current() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let current = follow_until_current("test bucket", Duration::from_secs(20), move |signal| {
        let attempt = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            match attempt {
                // Fails before it could read anything.
                1 => Err(crate::nats_error!("watch presence: timed out")),
                // Ends without having caught up.
                2 => Ok(()),
                // Catches up, then follows forever.
                _ => {
                    let _ = signal.send(());
                    std::future::pending::<()>().await;
                    Ok(())
                }
            }
        }
    })
    .await;
    assert!(
        current.load(Ordering::Acquire),
        "current once the third attempt caught up"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

/// A bucket that never becomes readable leaves the flag false after the
/// patience (the caller goes on, and must not act on the empty view), and
/// the follower keeps trying.
#[tokio::test]
async fn a_view_that_never_caught_up_says_so() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let current = follow_until_current(
        "test bucket",
        Duration::from_millis(1_500),
        move |_signal| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err(crate::nats_error!("watch presence: no stream")) }
        },
    )
    .await;
    assert!(!current.load(Ordering::Acquire));
    assert!(
        attempts.load(Ordering::SeqCst) >= 2,
        "tried again within the patience"
    );
}
