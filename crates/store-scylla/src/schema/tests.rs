use super::*;

fn defaults() -> ScyllaConfig {
    ScyllaConfig::parse("scylla://127.0.0.1/im").unwrap()
}

#[test]
fn every_statement_is_idempotent_and_in_the_keyspace() {
    for statement in statements(&defaults()) {
        assert!(statement.contains("IF NOT EXISTS"), "{statement}");
        assert!(
            statement.contains(" im") || statement.contains(" im."),
            "{statement}"
        );
    }
}

#[test]
fn migrations_add_what_the_tables_already_have() {
    let all = statements(&defaults()).join("\n");
    assert!(all.contains("recorded_at_ms bigint, fingerprint text"));
    assert_eq!(
        migrations(&defaults()),
        [
            "ALTER TABLE im.idempotency ADD fingerprint text",
            "ALTER TABLE im.conversations ADD history_visibility text",
            "ALTER TABLE im.idempotency WITH default_time_to_live = 2592000",
            "ALTER TABLE im.messages ADD reply_to bigint",
            "ALTER TABLE im.messages_cold ADD reply_to bigint"
        ]
    );
    assert!(already_applied(
        "Invalid column name fingerprint because it conflicts with an existing column"
    ));
    assert!(!already_applied("Unavailable: 2 replicas needed"));
}

#[test]
fn the_keyspace_uses_network_topology() {
    let plain = &statements(&defaults())[0];
    assert!(
        plain.contains("'class': 'NetworkTopologyStrategy', 'replication_factor': 3"),
        "{plain}"
    );
    let dc = ScyllaConfig::parse("scylla://h/im?dc=eu1&rf=5").unwrap();
    assert!(statements(&dc)[0].contains("'eu1': 5"));
}

#[test]
fn tiers_have_their_storage_settings() {
    let all = statements(&defaults()).join("\n");
    assert!(all.contains("messages (conversation_id text, bucket bigint"));
    assert!(all.contains(&format!("default_time_to_live = {}", 14 * 86_400)));
    assert!(all.contains("TimeWindowCompactionStrategy"));
    assert!(all.contains("ZstdCompressor"));
    assert!(all.contains("PRIMARY KEY ((user_id, bucket), sync_seq)"));
    assert!(all.contains("last_sync_seq bigint STATIC"));
}

#[test]
fn the_checked_in_schema_file_is_current() {
    let file = include_str!("../../../../schemas/scylla/schema.cql");
    assert_eq!(
        file,
        cql_file(&defaults()),
        "regenerate schemas/scylla/schema.cql: cargo test -p im-store-scylla -- --ignored write_schema_file"
    );
}

#[test]
#[ignore]
fn write_schema_file() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/scylla/schema.cql"
    );
    std::fs::write(path, cql_file(&defaults())).unwrap();
}
