use super::*;

#[test]
fn allows_the_burst_then_refuses_with_the_wait() {
    let limit = WriteLimit::new(10.0, 5.0);
    assert_eq!((0..8).filter(|_| limit.check("a").is_ok()).count(), 5);
    let wait = limit.check("a").unwrap_err();
    assert!(wait <= Duration::from_millis(100), "{wait:?}");
    assert!(limit.check("b").is_ok(), "another user has their own");
    std::thread::sleep(Duration::from_millis(120));
    assert!(limit.check("a").is_ok(), "one write refills in 100 ms");
}

#[test]
fn idle_users_are_forgotten() {
    let limit = WriteLimit::new(1000.0, 2.0);
    for user in 0..100 {
        let _ = limit.check(&format!("u{user}"));
    }
    assert_eq!(limit.users_tracked(), 100);
    std::thread::sleep(Duration::from_millis(10));
    limit.forget_idle();
    assert_eq!(limit.users_tracked(), 0);
}
