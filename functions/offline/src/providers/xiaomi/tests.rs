use super::*;
use crate::providers::sample_notice;

#[test]
fn forms_carry_the_mipush_fields() {
    let form = form(&sample_notice(), "com.example.im");
    let field = |name: &str| form.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(field("registration_id"), "abc123");
    assert_eq!(field("restricted_package_name"), "com.example.im");
    assert_eq!(field("title"), "Team");
    assert_eq!(field("description"), "3 new messages");
    assert_eq!(field("notify_id"), notify_id("g:team").to_string());
    let payload: Value = serde_json::from_str(&field("payload")).unwrap();
    assert_eq!(payload["badge"], 5);
}

#[test]
fn answers_map_to_outcomes() {
    let none = HeaderMap::new();
    let ok = StatusCode::OK;
    assert!(matches!(
        outcome(
            ok,
            &none,
            r#"{"result":"ok","code":0,"data":{"id":"x"}}"#,
            "t"
        ),
        SendOutcome::Delivered(_)
    ));
    assert!(matches!(
        outcome(
            ok,
            &none,
            r#"{"result":"ok","code":0,"data":{"id":"x","bad_regids":"u,t"}}"#,
            "t"
        ),
        SendOutcome::InvalidToken(_)
    ));
    assert!(matches!(
        outcome(
            ok,
            &none,
            r#"{"result":"error","code":22022,"reason":"bad package"}"#,
            "t"
        ),
        SendOutcome::Failed(_)
    ));
    assert!(matches!(
        outcome(StatusCode::BAD_GATEWAY, &none, "", "t"),
        SendOutcome::Retry { .. }
    ));
}
