use super::*;

fn registration(token: &str) -> PushRegistration {
    PushRegistration {
        provider: "fcm".into(),
        token: token.into(),
        registered_at: "2026-01-01T00:00:00.000Z".into(),
    }
}

#[test]
fn registrations_follow_puts_and_deletes() {
    let mut registry = Registry::default();
    registry.put("bob", "phone", registration("t1"), 3);
    registry.put("bob", "tablet", registration("t2"), 4);
    assert_eq!(registry.devices("bob").len(), 2);
    assert_eq!(registry.revision_holding("bob", "phone", "t1"), Some(3));
    assert_eq!(registry.revision_holding("bob", "phone", "t2"), None);
    registry.put("bob", "phone", registration("t3"), 7);
    registry.remove("bob", "phone", 3);
    assert_eq!(
        registry.devices("bob")[0].token,
        "t3",
        "an older removal does not take a newer registration"
    );
    registry.remove("bob", "phone", 8);
    registry.remove("bob", "tablet", 9);
    assert!(registry.devices("bob").is_empty());
    assert!(registry.devices("nobody").is_empty());
}
