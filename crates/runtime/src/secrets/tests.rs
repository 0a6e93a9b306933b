use super::*;

#[test]
fn weak_and_well_known_secrets_are_refused() {
    for weak in [
        "dev-secret-change-me",
        "change-me",
        "short",
        &"a".repeat(40),
    ] {
        assert!(check(weak).is_err(), "{weak}");
    }
    assert!(check(&generate()).is_ok());
    assert_ne!(generate(), generate());
}

#[test]
fn a_data_dir_gets_one_secret_readable_only_by_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read(dir.path())
        .unwrap_err()
        .to_string()
        .contains("imctl up"));
    let (secret, created) = load_or_create(dir.path()).unwrap();
    assert!(created);
    assert_eq!(load_or_create(dir.path()).unwrap(), (secret.clone(), false));
    assert_eq!(read(dir.path()).unwrap(), secret);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(secret_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
