//! Property tests of what the gateway parses from the network: WebSocket
//! frames and tokens (the fuzzing of issue 13: `PROPTEST_CASES` cases per
//! property, 4,096 by default here). Nothing may panic; a refusal always
//! names a known code; a token verifies only as it was signed.

use im_gateway::auth::{self, Claims};
use im_gateway::frames;
use proptest::prelude::*;
use serde_json::json;

const SECRET: &str = "adversarial-tests-secret-0123456789abcdef";

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(im_events::testing::property_cases())
}

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,12}",
        "[ :.@_\\-a-z0-9{}\"\\[\\]]{0,24}",
        "\\PC{0,16}",
        Just(String::new()),
    ]
}

fn op() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(frames::OPS.to_vec()).prop_map(str::to_string),
        hostile(),
    ]
}

const CODES: &[&str] = &["bad_json", "bad_frame", "unknown_op", "invalid_id"];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,256}") {
        if let Err(error) = frames::parse(&text) {
            prop_assert!(CODES.contains(&error.code), "{}", error.code);
        }
    }

    #[test]
    fn frames_with_hostile_fields(
        op in op(), conversation in hostile(), id in hostile(), seq in any::<i64>(),
        field in hostile(), value in hostile(), limit in any::<i64>(),
    ) {
        let mut frame = json!({"op": op, "conversation_id": conversation, "client_msg_id": id,
            "kind": "text", "body": {"text": value}, "seq": seq, "limit": limit, "token": value,
            "provider": value, "users": [value]});
        frame[field] = json!(value);
        match frames::parse(&frame.to_string()) {
            Ok(parsed) => {
                // Whatever parses as a write carries ids the id rules allow.
                if let frames::ClientFrame::Send { conversation_id, client_msg_id, .. } = parsed {
                    prop_assert!(im_events::ids::is_valid_id(&conversation_id));
                    prop_assert!(!client_msg_id.is_empty());
                }
            }
            Err(error) => prop_assert!(CODES.contains(&error.code), "{}", error.code),
        }
    }

    #[test]
    fn arbitrary_tokens_never_verify(token in "\\PC{0,200}") {
        prop_assert!(auth::verify(SECRET, &token).is_err());
    }

    /// Flipping any byte of a valid token makes it invalid.
    #[test]
    fn tampered_tokens_are_refused(position in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let token = auth::mint(SECRET, &Claims { sub: "alice".into(), dev: "d".into(), exp: 4_000_000_000, svc: false });
        let mut bytes = token.clone().into_bytes();
        let at = position.index(bytes.len());
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        let tampered = String::from_utf8_lossy(&bytes).into_owned();
        // Base64url padding bits can make two encodings decode alike; only
        // a token that decodes to other bytes must fail.
        if let Ok(claims) = auth::verify(SECRET, &tampered) {
            prop_assert_eq!(claims.sub, "alice");
            prop_assert!(!claims.svc);
        }
        prop_assert!(auth::verify("another-secret-0123456789abcdef-0123", &token).is_err());
    }

    #[test]
    fn token_extraction_never_panics(header in prop::option::of("\\PC{0,64}"), query in prop::option::of("\\PC{0,64}")) {
        let _ = auth::token_from(header.as_deref(), query.as_deref());
    }
}
