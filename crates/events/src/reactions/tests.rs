use super::*;

#[test]
fn emoji_and_shortcodes_pass() {
    for ok in [
        "👍",
        "👍🏽",
        "❤️",
        "👩‍👩‍👧",
        "🏳️‍🌈",
        "🇫🇷",
        "1️⃣",
        "#⃣",
        "™",
        ":party-parrot:",
        ":+1:",
        "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
    ] {
        assert!(check_emoji(ok).is_ok(), "{ok:?} refused");
    }
}

#[test]
fn anything_else_is_refused_with_a_reason() {
    for bad in [
        "",
        "a",
        "like",
        "👍👍",
        "👍 ",
        " 👍",
        "<b>",
        "::",
        ":UPPER:",
        "🇫",
        "🇫🇷🇩🇪",
        "👍\u{200D}",
        "\u{200D}👍",
        "1",
        "\u{0007}",
        ":this-name-is-far-too-long-to-be-a-code:",
    ] {
        let error = check_emoji(bad).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidEmoji, "{bad:?}");
    }
}
