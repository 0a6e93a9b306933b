use super::*;

#[test]
fn frames_travel_as_the_text_they_are() {
    let (alice, others) = (
        ["alice".to_string()],
        ["bob.smith".to_string(), "carol".to_string()],
    );
    let frames: [(&[String], &str); 2] = [
        (&alice, r#"{"op":"message","seq":1,"body":{"text":"a\nb"}}"#),
        (&others, r#"{"op":"unread","unread":2}"#),
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
    let frames: Vec<(Vec<String>, &str)> = frames.iter().map(|(u, f)| (u.to_vec(), *f)).collect();
    assert_eq!(got, frames);
    assert!(gateway_frames_payload(&[(&alice, "{not json")]).is_err());
    assert!(serde_json::from_slice::<GatewayFrames>(b"[1,2]").is_err());
}
