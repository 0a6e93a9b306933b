use super::*;

#[test]
fn registrations_are_checked() {
    assert!(check_registration("apns", "a1b2c3").is_ok());
    assert!(check_registration("fcm", "dXk:APA91b_x-y").is_ok());
    assert!(check_registration("xiaomi", "abc/def+g=").is_ok());
    assert!(check_registration("pigeon", "x")
        .unwrap_err()
        .contains("unknown"));
    assert!(check_registration("fcm", "").is_err());
    assert!(check_registration("fcm", "has space").is_err());
    assert!(check_registration("apns", "not-hex").is_err());
    assert!(check_registration("webhook", &"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
}
