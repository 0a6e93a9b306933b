//! Driver errors → store errors that say what to do.

use im_store::StoreError;

/// Every driver failure is a backend error (the runtime retries those),
/// worded with the likely cause and the next step.
pub fn map_error(context: &str, error: impl std::fmt::Display) -> StoreError {
    let text = error.to_string();
    let lower = text.to_ascii_lowercase();
    let hint = if lower.contains("keyspace")
        && (lower.contains("does not exist") || lower.contains("not found"))
        || lower.contains("unconfigured table")
        || lower.contains("undefined name")
    {
        "; create the schema with `imctl schema apply --store scylla://…`"
    } else if lower.contains("unavailable") || lower.contains("not enough replicas") {
        "; too few replicas are up for the consistency level: check the cluster (nodetool status)"
    } else if lower.contains("timeout") || lower.contains("timed out") {
        "; the cluster is slow or overloaded: the batch will be retried"
    } else if lower.contains("connection") || lower.contains("connect") || lower.contains("refused")
    {
        "; is ScyllaDB reachable at the hosts in IM_STORE?"
    } else {
        ""
    };
    StoreError::Backend(format!("scylla {context}: {text}{hint}"))
}

#[cfg(test)]
mod tests {
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
        assert!(
            message(map_error("x", "unconfigured table messages")).contains("imctl schema apply")
        );
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
}
