use super::*;

fn message(error: StoreError) -> String {
    match error {
        StoreError::Backend(text) => text,
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_name_the_step_and_the_remedy() {
    assert!(
        message(map_error("prepare hot_get", "Keyspace im does not exist"))
            .contains("imctl schema apply")
    );
    assert!(message(map_error("x", "unconfigured table messages")).contains("imctl schema apply"));
    assert!(message(map_error(
        "seq_claim",
        "Database returned an error: Unavailable, consistency: LocalQuorum"
    ))
    .contains("nodetool status"));
    assert!(message(map_error("hot_put", "Request timed out")).contains("retried"));
    assert!(message(map_error("connect to a:9042", "Connection refused")).contains("IM_STORE"));
    let plain = message(map_error("batch", "something odd"));
    assert_eq!(plain, "scylla batch: something odd");
}
