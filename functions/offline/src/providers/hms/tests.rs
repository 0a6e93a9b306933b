use super::*;
use crate::providers::sample_notice;

#[test]
fn messages_follow_the_push_kit_format() {
    let message = message(&sample_notice(), Some("com.example.Main"));
    assert_eq!(message["message"]["token"][0], "abc123");
    let notification = &message["message"]["android"]["notification"];
    assert_eq!(notification["title"], "Team");
    assert_eq!(notification["click_action"]["type"], 3);
    assert_eq!(notification["badge"]["set_num"], 5);
    let data: Value = serde_json::from_str(message["message"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["last_seq"], 6);
    assert!(
        super::message(&sample_notice(), None)["message"]["android"]["notification"]
            .get("badge")
            .is_none()
    );
}

#[test]
fn result_codes_map_to_outcomes() {
    let none = HeaderMap::new();
    let ok = StatusCode::OK;
    assert!(matches!(
        outcome(ok, &none, r#"{"code":"80000000","msg":"Success"}"#, "t").0,
        SendOutcome::Delivered(_)
    ));
    assert!(matches!(
        outcome(
            ok,
            &none,
            r#"{"code":"80300007","msg":"All the tokens are invalid"}"#,
            "t"
        )
        .0,
        SendOutcome::InvalidToken(_)
    ));
    let partial =
        r#"{"code":"80100000","msg":"{\"success\":0,\"failure\":1,\"illegal_tokens\":[\"t\"]}"}"#;
    assert!(matches!(
        outcome(ok, &none, partial, "t").0,
        SendOutcome::InvalidToken(_)
    ));
    assert!(matches!(
        outcome(ok, &none, partial, "other").0,
        SendOutcome::Delivered(_)
    ));
    let (expired, refresh) = outcome(
        StatusCode::UNAUTHORIZED,
        &none,
        r#"{"code":"80200003","msg":"OAuth token expired"}"#,
        "t",
    );
    assert!(matches!(expired, SendOutcome::Retry { .. }) && refresh);
    assert!(matches!(
        outcome(StatusCode::SERVICE_UNAVAILABLE, &none, "", "t").0,
        SendOutcome::Retry { .. }
    ));
    assert!(matches!(
        outcome(ok, &none, r#"{"code":"80300008","msg":"too large"}"#, "t").0,
        SendOutcome::Failed(_)
    ));
}
