//! One active owner per partition, with failover: a second replica takes
//! over the partitions of a killed or paused owner, and nothing is lost or
//! duplicated.

use std::time::{Duration, Instant};

use im_pipeline_tests::{eventually, Pipeline};
use im_store::ConversationStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_takes_over_a_killed_or_paused_owner() {
    let mut pipeline = Pipeline::start().await;
    // The first dedupe owns every partition; a second one waits.
    pipeline.spawn("dedupe", "dedupe-b");
    for n in 0..20 {
        pipeline
            .send_text("dm:fa:fb", "fa", &format!("before-{n}"), "before")
            .await;
    }
    pipeline.settle(Duration::from_secs(30)).await;

    // Kill the owner: the standby takes over once the lease (1.5 s) expires.
    pipeline.process("dedupe").kill9();
    let killed_at = Instant::now();
    for n in 0..20 {
        pipeline
            .send_text("dm:fa:fb", "fb", &format!("after-kill-{n}"), "after kill")
            .await;
    }
    let store = pipeline.conversations();
    eventually(Duration::from_secs(30), || {
        store.message("dm:fa:fb", 40).ok().flatten()
    })
    .await;
    let failover = killed_at.elapsed();
    println!("failover after SIGKILL: {failover:?} until the 20 new messages were committed");
    assert!(pipeline
        .process("dedupe-b")
        .log_text()
        .contains("took partition lease"));

    // Pause the new owner, let the restarted first replica take over, then
    // resume the paused one: it must give its partitions up, not write.
    pipeline.process("dedupe").restart().unwrap();
    pipeline.process("dedupe-b").signal("STOP");
    for n in 0..20 {
        pipeline
            .send_text("dm:fa:fb", "fa", &format!("after-pause-{n}"), "after pause")
            .await;
    }
    eventually(Duration::from_secs(30), || {
        store.message("dm:fa:fb", 60).ok().flatten()
    })
    .await;
    pipeline.process("dedupe-b").signal("CONT");
    for n in 0..10 {
        pipeline
            .send_text(
                "dm:fa:fb",
                "fb",
                &format!("after-resume-{n}"),
                "after resume",
            )
            .await;
    }
    pipeline.settle(Duration::from_secs(60)).await;

    let history = store.history("dm:fa:fb", None, 1000).unwrap();
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=70).collect::<Vec<_>>()
    );
    let mut ids: Vec<&str> = history.iter().map(|m| m.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 70, "each event exactly once");
    let resumed_log = pipeline.process("dedupe-b").log_text();
    assert!(
        resumed_log.contains("lost partition lease") || resumed_log.contains("partition fenced"),
        "the resumed stale owner must notice it lost its partitions:\n{resumed_log}"
    );
    assert!(pipeline.dead_letters().await.is_empty());
}
