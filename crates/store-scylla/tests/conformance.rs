//! The store conformance suite against a live ScyllaDB cluster, when
//! `IM_SCYLLA_URI` names one (e.g. `scylla://127.0.0.1/im_test?rf=1`); each
//! check gets a fresh keyspace. Without it, every test here says that the
//! ScyllaDB run was skipped and why, and passes without pretending.

use im_store::conformance;
use im_store_scylla::{ScyllaConfig, ScyllaStore};

fn store(check: &str) -> Option<ScyllaStore> {
    let Ok(uri) = std::env::var("IM_SCYLLA_URI") else {
        eprintln!("ScyllaDB conformance `{check}` skipped: IM_SCYLLA_URI is not set (no cluster to run against)");
        return None;
    };
    let mut config = ScyllaConfig::parse(&uri).unwrap_or_else(|e| panic!("IM_SCYLLA_URI: {e}"));
    let suffix = format!(
        "{}_{}",
        check.chars().take(20).collect::<String>(),
        std::process::id()
    );
    config.keyspace = format!(
        "{}_{}",
        config.keyspace.chars().take(16).collect::<String>(),
        suffix
    );
    ScyllaStore::apply_schema(&config).unwrap_or_else(|e| panic!("schema: {e}"));
    Some(ScyllaStore::connect(config).unwrap_or_else(|e| panic!("connect: {e}")))
}

/// Checks this backend does not run, and why.
const LEFT_OUT: &[(&str, &str)] = &[
    ("tiers_read_as_one", "it asserts the embedded backend's segment counts and that moved rows leave the hot table; here a pass copies rows to the cold table and the hot ones expire by the table's TTL, so the tier counts differ by design"),
    ("retention_deletes_by_kind", "it expects a pass to delete messages past retention; here retention is the TTL the cold copy is written with"),
    ("idempotency_keys_are_purged_by_age", "it expects a pass to purge keys by recorded_at_ms; here keys expire by the table's default_time_to_live (keep_idempotency=)"),
];

im_store::conformance_suite! {
    stores: |check: &str| {
        store(check).map(|store| conformance::Stores {
            conversations: Box::new(store.clone()),
            users: Box::new(store),
            guard: Box::new(()),
        })
    },
    notifications: |check: &str| {
        store(check).map(|store| conformance::Notifications {
            store: Box::new(store),
            guard: Box::new(()),
        })
    },
    left_out: LEFT_OUT,
}
