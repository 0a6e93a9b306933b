use super::*;

#[test]
fn ids_follow_the_contract() {
    assert!(is_valid_id("alice@example.com"));
    assert!(is_valid_id("dm:a:b"));
    assert!(!is_valid_id(""));
    assert!(!is_valid_id("has space"));
    assert!(!is_valid_id("slash/no"));
    assert!(!is_valid_id(&"x".repeat(129)));
    assert!(is_valid_id(&"x".repeat(128)));
}

#[test]
fn sources_name_their_user_one_way_only() {
    assert_eq!(
        device_source("bob", "phone").unwrap(),
        "urn:im:device:bob:phone"
    );
    assert_eq!(user_of_source("urn:im:device:bob:phone"), Some("bob"));
    assert_eq!(user_of_source("urn:im:user:bob"), Some("bob"));
    assert_eq!(user_of_source("urn:im:device::phone"), None);
    assert_eq!(user_of_source("urn:svc:billing"), None);
    // "bob:x" + "y" and "bob" + "x:y" would both be urn:im:device:bob:x:y.
    assert!(device_source("bob:x", "y").is_err());
    assert!(device_source("bob", "x:y").is_err());
    assert!(device_source("bob", "").is_err());
}

#[test]
fn message_ids_join_source_and_id_unambiguously() {
    // Concatenated, these two pairs were the same Nats-Msg-Id.
    assert_ne!(nats_msg_id("urn:a", "bc"), nats_msg_id("urn:ab", "c"));
    assert_eq!(nats_msg_id("urn:a", "bc"), "urn:a bc");
}

#[test]
fn direct_ids_are_ordered() {
    assert_eq!(direct_conversation_id("bob", "alice"), "dm:alice:bob");
    assert_eq!(direct_members("dm:alice:bob"), Some(("alice", "bob")));
    assert_eq!(direct_members("dm:alice"), None);
    assert_eq!(direct_members("dm:a:b:c"), None);
    assert_eq!(direct_members("g:x"), None);
}
