use super::*;

#[test]
fn signatures_verify_and_tampering_does_not() {
    let body = br#"{"a":1}"#;
    let signed = signature("s3cret", "n1", 1_700_000_000, body);
    assert!(signed.starts_with("v1,"), "{signed}");
    assert!(verify("s3cret", "n1", "1700000000", body, &signed));
    assert!(!verify("other", "n1", "1700000000", body, &signed));
    assert!(!verify("s3cret", "n2", "1700000000", body, &signed));
    assert!(!verify("s3cret", "n1", "1700000001", body, &signed));
    assert!(!verify(
        "s3cret",
        "n1",
        "1700000000",
        br#"{"a":2}"#,
        &signed
    ));
    assert!(!verify("s3cret", "n1", "1700000000", body, "v1,zz"));
    assert!(verify(
        "s3cret",
        "n1",
        "1700000000",
        body,
        &format!("v1,b2xk {signed}")
    ));
}

/// The example of the Standard Webhooks specification: a receiver's
/// library computes the same signature from the same secret.
#[test]
fn the_specifications_example_verifies() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    let timestamp = 1_614_265_330;
    let body = br#"{"test": 2432232314}"#;
    assert_eq!(
        signature(secret, id, timestamp, body),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[test]
fn gone_removes_the_token() {
    assert!(matches!(
        outcome(StatusCode::GONE, &HeaderMap::new(), ""),
        SendOutcome::InvalidToken(_)
    ));
    assert!(matches!(
        outcome(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), ""),
        SendOutcome::Retry { .. }
    ));
}
