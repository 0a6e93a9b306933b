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

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(store) = store(stringify!($name)) {
                    conformance::$name(&store, &store);
                }
            }
        )*
        #[test]
        fn every_store_check_runs_or_is_left_out_with_a_reason() {
            let run = [$(stringify!($name)),*];
            assert_eq!(
                conformance::coverage(conformance::STORE_CHECKS, &run, LEFT_OUT),
                (vec![], vec![]),
                "(missing, unknown)"
            );
        }
    };
}

conformance_tests!(
    conversation_round_trip,
    membership_intervals,
    messages_and_history,
    history_as_members_may_read_it,
    seq_fence_refuses_a_second_message,
    epoch_fence_refuses_stale_owner,
    idempotency_records,
    edits_and_recalls,
    replies_reactions_blocks_and_receipts,
    user_conversations_and_unread,
    sync_log_pages_in_order,
    sync_log_compaction_keeps_the_head,
    apply_is_atomic,
);

macro_rules! notification_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(store) = store(stringify!($name)) {
                    conformance::$name(&store);
                }
            }
        )*
    };
}

#[test]
fn every_notification_check_runs() {
    let run = [
        "notify_states_come_due",
        "outbox_is_idempotent_and_logged",
        "notify_fence_and_atomicity",
    ];
    assert_eq!(
        conformance::coverage(conformance::NOTIFICATION_CHECKS, &run, &[]),
        (vec![], vec![])
    );
}

notification_tests!(
    notify_states_come_due,
    outbox_is_idempotent_and_logged,
    notify_fence_and_atomicity
);
