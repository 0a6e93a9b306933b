use super::*;

#[test]
fn every_role_gets_credentials_and_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = ensure_credentials(dir.path()).unwrap();
    assert_eq!(credentials.len(), ROLES.len());
    assert_eq!(
        ensure_credentials(dir.path()).unwrap(),
        credentials,
        "stable"
    );
    let config = server_config(&credentials);
    let publisher = config
        .lines()
        .find(|line| line.contains("\"publisher\""))
        .unwrap();
    assert!(
        publisher.contains("allow: [\"im.ingest.>\", \"im.keyed.>\"]"),
        "{publisher}"
    );
    assert!(!publisher.contains("$JS.API"), "{publisher}");
    let unread = config
        .lines()
        .find(|line| line.contains("\"unread\""))
        .unwrap();
    assert!(
        unread.contains("$JS.API.STREAM.DELETE.>"),
        "denied: {unread}"
    );
    assert!(unread.contains("_INBOX_unread.>"), "{unread}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(credentials_path(dir.path(), "publisher"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn processes_connect_as_their_role() {
    assert_eq!(role_of_process("im-dedupe"), "dedupe");
    assert_eq!(role_of_process("im-gateway"), "gateway");
    assert_eq!(role_of_process("imctl-tail"), "admin");
}
