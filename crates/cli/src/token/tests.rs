use super::*;

#[test]
fn ttls_parse() {
    assert_eq!(parse_ttl("90").unwrap(), 90);
    assert_eq!(parse_ttl("30m").unwrap(), 1800);
    assert_eq!(parse_ttl("1h").unwrap(), 3600);
    assert_eq!(parse_ttl("7d").unwrap(), 604_800);
    assert_eq!(parse_ttl("1w").unwrap(), 604_800);
    assert_eq!(parse_ttl("1h30m").unwrap(), 5400);
    assert!(parse_ttl("1500ms").is_err());
    assert!(parse_ttl("-5").is_err());
    assert!(parse_ttl("h").is_err());
}
