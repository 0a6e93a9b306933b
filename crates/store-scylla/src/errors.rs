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
mod tests;
