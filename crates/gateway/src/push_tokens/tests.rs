use super::*;

#[test]
fn tokens_are_masked() {
    assert_eq!(mask("abcdefghijkl"), "…ghijkl");
    assert_eq!(mask("short"), "…");
}
