//! Identifier rules of the contract: at most 128 bytes of `[A-Za-z0-9._:@-]`.

use crate::codes::{ErrorCode, EventError};

pub const MAX_ID_LEN: usize = 128;

pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

pub fn check_id(what: &str, id: &str) -> Result<(), EventError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(EventError::new(
            ErrorCode::InvalidId,
            format!("{what} {id:?} is not 1-128 bytes of [A-Za-z0-9._:@-]"),
        ))
    }
}

/// The implicit direct conversation of two users: `dm:<smaller>:<larger>`.
pub fn direct_conversation_id(a: &str, b: &str) -> String {
    if a <= b {
        format!("dm:{a}:{b}")
    } else {
        format!("dm:{b}:{a}")
    }
}

/// The two members named by a `dm:` conversation id, if it is one.
/// User ids may not contain `:` for this form to be unambiguous, so a `dm:`
/// id with any other number of parts is not a direct conversation id.
pub fn direct_members(conversation_id: &str) -> Option<(&str, &str)> {
    let rest = conversation_id.strip_prefix("dm:")?;
    let mut parts = rest.split(':');
    let first = parts.next()?;
    let second = parts.next()?;
    if parts.next().is_some() || first.is_empty() || second.is_empty() {
        return None;
    }
    Some((first, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_contract() {
        assert!(is_valid_id("alice@example.com"));
        assert!(is_valid_id("dm:a:b"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("has space"));
        assert!(!is_valid_id("slash/no"));
        assert!(!is_valid_id(&"x".repeat(129)));
        assert!(is_valid_id(&"x".repeat(128)));
    }

    #[test]
    fn direct_ids_are_ordered() {
        assert_eq!(direct_conversation_id("bob", "alice"), "dm:alice:bob");
        assert_eq!(direct_members("dm:alice:bob"), Some(("alice", "bob")));
        assert_eq!(direct_members("dm:alice"), None);
        assert_eq!(direct_members("dm:a:b:c"), None);
        assert_eq!(direct_members("g:x"), None);
    }
}
