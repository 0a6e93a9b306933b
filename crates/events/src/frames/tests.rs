use super::*;

#[test]
fn frames_travel_as_the_text_they_are() {
    let frames = [
        (
            vec!["alice".to_string()],
            r#"{"op":"message","seq":1,"body":{"text":"a\nb"}}"#,
        ),
        (
            vec!["bob.smith".to_string(), "carol".to_string()],
            r#"{"op":"unread","unread":2}"#,
        ),
    ];
    let payload = gateway_frames_payload(&frames).unwrap();
    let read: GatewayFrames = serde_json::from_slice(&payload).unwrap();
    let got: Vec<(Vec<String>, &str)> = read
        .frames
        .iter()
        .map(|f| {
            (
                f.users.iter().map(|u| u.to_string()).collect(),
                f.frame.get(),
            )
        })
        .collect();
    assert_eq!(got, frames);
    assert!(gateway_frames_payload(&[(vec!["a".into()], "{not json")]).is_err());
    assert!(serde_json::from_slice::<GatewayFrames>(b"[1,2]").is_err());
}
