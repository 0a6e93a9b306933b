use super::*;

#[test]
fn keys_name_variables_and_values_become_text() {
    let found = settings(
        "http = \"127.0.0.1:9000\"\nIM_DURABILITY = \"relaxed\"\npartitions = 8\nlog_json = true\n",
    )
    .unwrap();
    assert_eq!(
        found,
        vec![
            ("IM_HTTP".to_string(), "127.0.0.1:9000".to_string()),
            ("IM_DURABILITY".to_string(), "relaxed".to_string()),
            ("IM_PARTITIONS".to_string(), "8".to_string()),
            ("IM_LOG_JSON".to_string(), "true".to_string()),
        ]
    );
}

#[test]
fn bad_files_say_what_is_wrong() {
    assert!(settings("http = ").unwrap_err().contains("not TOML"));
    assert!(settings("[gateway]\nhttp = \"x\"")
        .unwrap_err()
        .contains("not tables"));
    assert!(settings("ports = [1, 2]")
        .unwrap_err()
        .contains("not array"));
    assert!(settings("\"a b\" = 1")
        .unwrap_err()
        .contains("not a setting"));
}

#[test]
fn the_file_is_found_in_the_arguments() {
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        path_from(&args(&["imctl", "up", "--config", "im.toml"])),
        Some(PathBuf::from("im.toml"))
    );
    assert_eq!(
        path_from(&args(&["im-unread", "--config=/etc/im.toml"])),
        Some(PathBuf::from("/etc/im.toml"))
    );
}

#[test]
fn secrets_are_masked() {
    assert_eq!(shown("IM_JWT_SECRET", "abc"), "****");
    assert_eq!(shown("IM_NATS_PASSWORD", "abc"), "****");
    assert_eq!(shown("IM_HTTP", "127.0.0.1:1"), "127.0.0.1:1");
}
