use super::*;
use crate::providers::sample_notice;

#[test]
fn requests_carry_the_apns_headers_and_payload() {
    let notice = sample_notice();
    let (path, headers, body) = request(&notice, "com.example.im");
    assert_eq!(path, "/3/device/abc123");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(header("apns-topic"), "com.example.im");
    assert_eq!(header("apns-push-type"), "alert");
    assert_eq!(header("apns-id"), notice.notification_id);
    assert_eq!(header("apns-collapse-id"), "g:team");
    assert_eq!(body["aps"]["badge"], 5);
    assert_eq!(body["aps"]["alert"]["body"], "3 new messages");
    assert_eq!(body["aps"]["thread-id"], "g:team");
    assert_eq!(body["im"]["last_seq"], 6);
}

#[test]
fn long_conversation_ids_collapse_to_64_bytes() {
    let id = "g:".to_string() + &"x".repeat(120);
    assert!(collapse_id(&id).len() <= 64);
    assert_eq!(collapse_id(&id), collapse_id(&id));
}

#[test]
fn answers_map_to_outcomes() {
    let none = HeaderMap::new();
    let (gone, _) = outcome(StatusCode::GONE, &none, r#"{"reason":"Unregistered"}"#);
    assert!(matches!(gone, SendOutcome::InvalidToken(text) if text.contains("Unregistered")));
    let (bad, _) = outcome(
        StatusCode::BAD_REQUEST,
        &none,
        r#"{"reason":"BadDeviceToken"}"#,
    );
    assert!(matches!(bad, SendOutcome::InvalidToken(_)));
    let (payload, _) = outcome(
        StatusCode::BAD_REQUEST,
        &none,
        r#"{"reason":"PayloadTooLarge"}"#,
    );
    assert!(matches!(payload, SendOutcome::Failed(_)));
    let (expired, refresh) = outcome(
        StatusCode::FORBIDDEN,
        &none,
        r#"{"reason":"ExpiredProviderToken"}"#,
    );
    assert!(matches!(expired, SendOutcome::Retry { .. }) && refresh);
    let (busy, _) = outcome(
        StatusCode::TOO_MANY_REQUESTS,
        &none,
        r#"{"reason":"TooManyRequests"}"#,
    );
    assert!(matches!(busy, SendOutcome::Retry { .. }));
    let (ok, _) = outcome(StatusCode::OK, &none, "");
    assert!(matches!(ok, SendOutcome::Delivered(_)));
}
