use super::*;

#[test]
fn entries_say_online_and_when_last_seen() {
    let e = entry("bob", false, Some(1_700_000_000_000));
    assert_eq!(e["user_id"], "bob");
    assert_eq!(e["online"], false);
    assert_eq!(e["last_seen"], "2023-11-14T22:13:20.000Z");
    assert!(entry("eve", false, None)["last_seen"].is_null());
}
