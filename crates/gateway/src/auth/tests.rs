use super::*;

const NOW: i64 = 1_900_000_000;

#[test]
fn minted_tokens_verify() {
    let token = mint_device(
        "s3cret",
        "alice",
        "phone",
        chrono::Utc::now().timestamp(),
        60,
    );
    let claims = verify("s3cret", &token).unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.dev.as_str(), claims.svc),
        ("alice", "phone", false)
    );
}

#[test]
fn bad_tokens_are_refused_with_their_reason() {
    let expired = mint_device("s3cret", "alice", "phone", 1_000, 60);
    assert_eq!(verify("s3cret", &expired), Err(AuthError::Expired));
    let token = mint_device("s3cret", "alice", "phone", NOW, 60);
    assert!(matches!(
        verify("other", &token),
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(
        verify("s3cret", "not.a.jwt"),
        Err(AuthError::Invalid(_))
    ));
    let bad_user = mint_device("s3cret", "has space", "phone", NOW, 60);
    assert!(matches!(
        verify("s3cret", &bad_user),
        Err(AuthError::Invalid(_))
    ));
}

#[test]
fn tokens_come_from_header_or_query() {
    assert_eq!(token_from(Some("Bearer abc"), None).as_deref(), Some("abc"));
    assert_eq!(
        token_from(None, Some("x=1&token=xyz")).as_deref(),
        Some("xyz")
    );
    assert_eq!(token_from(Some("Basic abc"), None), None);
    assert_eq!(token_from(None, None), None);
    // Percent-encoded, as a URL library may write it.
    assert_eq!(
        token_from(None, Some("token=ab%2Ecd%2Eef")).as_deref(),
        Some("ab.cd.ef")
    );
}
