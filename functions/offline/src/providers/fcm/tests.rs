use super::*;
use crate::providers::sample_notice;

#[test]
fn messages_follow_the_v1_format() {
    let message = message(&sample_notice());
    assert_eq!(message["message"]["token"], "abc123");
    assert_eq!(message["message"]["notification"]["title"], "Team");
    assert_eq!(message["message"]["data"]["last_seq"], "6");
    assert_eq!(message["message"]["android"]["collapse_key"], "g:team");
    assert_eq!(
        message["message"]["android"]["notification"]["notification_count"],
        5
    );
    assert_eq!(message["message"]["apns"]["payload"]["aps"]["badge"], 5);
}

#[test]
fn answers_map_to_outcomes() {
    let none = HeaderMap::new();
    let unregistered = r#"{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
    assert!(matches!(
        outcome(StatusCode::NOT_FOUND, &none, unregistered).0,
        SendOutcome::InvalidToken(_)
    ));
    let invalid = r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"errorCode":"INVALID_ARGUMENT"}]}}"#;
    assert!(matches!(
        outcome(StatusCode::BAD_REQUEST, &none, invalid).0,
        SendOutcome::Failed(_)
    ));
    let (expired, refresh) = outcome(StatusCode::UNAUTHORIZED, &none, "{}");
    assert!(matches!(expired, SendOutcome::Retry { .. }) && refresh);
    assert!(matches!(
        outcome(StatusCode::TOO_MANY_REQUESTS, &none, "{}").0,
        SendOutcome::Retry { .. }
    ));
    assert!(matches!(
        outcome(StatusCode::OK, &none, r#"{"name":"projects/p/messages/1"}"#).0,
        SendOutcome::Delivered(_)
    ));
}
