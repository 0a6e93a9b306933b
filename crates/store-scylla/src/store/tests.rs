use super::*;

#[test]
pub(super) fn statements_name_the_keyspace_and_bind_every_value() {
    let mut names = std::collections::HashSet::new();
    for (name, template) in STATEMENTS {
        assert!(names.insert(*name), "{name} twice");
        let text = statement_text(template, "im_test");
        if !template.contains("system.") {
            assert!(text.contains("im_test."), "{name}: {text}");
        }
        assert!(!text.contains("{ks}"));
        assert!(
            !text.contains("ALLOW FILTERING"),
            "{name} must not scan: {text}"
        );
    }
}

#[test]
pub(super) fn lightweight_transactions_guard_seqs_fences_and_first_writes() {
    let text = |name: &str| STATEMENTS.iter().find(|(n, _)| *n == name).unwrap().1;
    assert!(text("seq_claim").ends_with("IF NOT EXISTS"));
    assert!(text("fence_create").ends_with("IF NOT EXISTS"));
    assert!(text("fence_raise").ends_with("IF epoch <= ?"));
    assert!(text("notification_put").ends_with("IF NOT EXISTS"));
    assert!(text("idempotency_put").ends_with("IF NOT EXISTS"));
    assert!(text("cold_put").ends_with("USING TTL ?"));
}

#[test]
pub(super) fn message_statements_bind_the_mapped_columns() {
    let text = |name: &str| STATEMENTS.iter().find(|(n, _)| *n == name).unwrap().1;
    for name in ["hot_put", "cold_put"] {
        assert!(text(name).contains(MESSAGE_COLUMNS), "{name}");
    }
    let placeholders = text("hot_put").matches('?').count();
    assert_eq!(placeholders, MESSAGE_COLUMNS.split(", ").count());
    assert_eq!(
        text("cold_put").matches('?').count(),
        placeholders + 1,
        "plus the TTL"
    );
    assert_eq!(
        text("notification_put").matches('?').count(),
        NOTIFICATION_COLUMNS.split(", ").count()
    );
    assert_eq!(
        text("notify_state_put").matches('?').count(),
        NOTIFY_STATE_COLUMNS.split(", ").count()
    );
    assert_eq!(
        text("user_conversation_put").matches('?').count(),
        USER_CONVERSATION_COLUMNS.split(", ").count()
    );
}
