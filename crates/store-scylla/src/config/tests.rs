use super::*;

#[test]
fn uris_parse_with_defaults() {
    let config = ScyllaConfig::parse("scylla://10.0.0.1,10.0.0.2:19042/im").unwrap();
    assert_eq!(config.hosts, vec!["10.0.0.1:9042", "10.0.0.2:19042"]);
    assert_eq!(config.keyspace, "im");
    assert_eq!(config.replication_factor, 3);
    assert_eq!(config.consistency, Consistency::LocalQuorum);
    assert_eq!(config.datacenter, None);
    let tuned =
        ScyllaConfig::parse("scylla://a/im_prod?dc=eu1&rf=5&consistency=quorum&hot_ttl=30d")
            .unwrap();
    assert_eq!(tuned.datacenter.as_deref(), Some("eu1"));
    assert_eq!(tuned.replication_factor, 5);
    assert_eq!(tuned.consistency, Consistency::Quorum);
    assert_eq!(tuned.hot_ttl_secs, 30 * 86_400);
    assert_eq!(config.keep_idempotency_secs, 30 * 86_400);
    let kept = ScyllaConfig::parse("scylla://a/im?keep_idempotency=14d").unwrap();
    assert_eq!(kept.keep_idempotency_secs, 14 * 86_400);
}

#[test]
fn credentials_and_tls_come_from_the_uri() {
    let plain = ScyllaConfig::parse("scylla://a/im").unwrap();
    assert_eq!((plain.login, plain.tls), (None, None));
    let config =
        ScyllaConfig::parse("scylla://im_app:p@ss:w0rd@10.0.0.1,10.0.0.2/im?tls=true").unwrap();
    let login = config.login.clone().unwrap();
    assert_eq!(
        (login.user.as_str(), login.password.as_str()),
        ("im_app", "p@ss:w0rd")
    );
    assert_eq!(config.hosts, vec!["10.0.0.1:9042", "10.0.0.2:9042"]);
    assert_eq!(config.tls, Some(Tls { ca: None }));
    assert!(
        !format!("{config:?}").contains("w0rd"),
        "the password is not logged"
    );
    let error = ScyllaConfig::parse("scylla://u:hunter2@h").unwrap_err();
    assert!(!error.contains("hunter2"), "{error}");
    assert_eq!(
        redact("scylla://u:pw@h/im?tls=1"),
        "scylla://u:***@h/im?tls=1"
    );
    let pinned = ScyllaConfig::parse("scylla://h/im?ca=/etc/im/scylla-ca.pem").unwrap();
    assert_eq!(
        pinned.tls.unwrap().ca.as_deref(),
        Some(std::path::Path::new("/etc/im/scylla-ca.pem"))
    );
    let missing = Tls {
        ca: Some("/nonexistent/ca.pem".into()),
    };
    assert!(missing.client_config().unwrap_err().contains("ca="));
}

#[test]
fn bad_uris_say_what_is_wrong() {
    for (uri, needle) in [
        ("sqlite:///x", "not a scylla"),
        ("scylla://host", "no keyspace"),
        ("scylla:///im", "no host"),
        ("scylla://h/bad-name", "keyspace"),
        ("scylla://h/1im", "keyspace"),
        ("scylla://h/im?rf=0", "rf="),
        ("scylla://h/im?consistency=most", "consistency"),
        ("scylla://h/im?color=red", "unknown"),
        ("scylla://nopassword@h/im", "user:password"),
        ("scylla://:pw@h/im", "no user"),
        ("scylla://h/im?tls=maybe", "tls="),
        ("scylla://h/im?keep_idempotency=3d", "at least 7d"),
        ("scylla://h/im?ca=", "no file"),
    ] {
        let error = ScyllaConfig::parse(uri).unwrap_err();
        assert!(error.contains(needle), "{uri}: {error}");
    }
}
