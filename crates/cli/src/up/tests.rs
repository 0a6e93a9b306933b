use super::*;

#[test]
fn a_new_data_directory_gets_a_shard_per_node_and_keeps_it() {
    assert_eq!(shards_for(None, None, true, 3).unwrap(), 3);
    assert_eq!(shards_for(None, None, true, 1).unwrap(), 1);
    assert_eq!(shards_for(None, Some(3), false, 3).unwrap(), 3);
    // Made before shards existed: one.
    assert_eq!(shards_for(None, None, false, 3).unwrap(), 1);
    assert_eq!(shards_for(Some(2), None, true, 3).unwrap(), 2);
    let refused = shards_for(Some(3), None, false, 3).unwrap_err().to_string();
    assert!(refused.contains("--shards 1"), "{refused}");
    assert!(shards_for(Some(1), Some(3), false, 3).is_err());
}

#[test]
fn development_tokens_only_where_only_this_machine_reaches() {
    assert!(dev_tokens_for("127.0.0.1:8080", None));
    assert!(dev_tokens_for("[::1]:8080", None));
    assert!(dev_tokens_for("localhost:8080", None));
    assert!(!dev_tokens_for("0.0.0.0:8080", None));
    assert!(!dev_tokens_for("10.1.2.3:8080", None));
    assert!(!dev_tokens_for("[::]:8080", None));
    assert!(dev_tokens_for("0.0.0.0:8080", Some("true")));
    assert!(!dev_tokens_for("127.0.0.1:8080", Some("false")));
}

#[test]
fn a_dead_process_comes_back_later_each_time_and_a_crash_loop_stops_all() {
    let mut supervisor = Supervisor::default();
    let start = Instant::now();
    assert_eq!(
        supervisor.died("gw", start),
        Restart::After(Duration::from_secs(1))
    );
    // Seen again before its restart: nothing new.
    assert_eq!(supervisor.died("gw", start), Restart::Pending);
    assert!(supervisor.due(start).is_empty());
    let later = start + Duration::from_secs(1);
    assert_eq!(supervisor.due(later), vec!["gw".to_string()]);
    let waits: Vec<Restart> = (1..5)
        .map(|n| {
            let at = later + Duration::from_secs(n * 5);
            let restart = supervisor.died("gw", at);
            supervisor.due(at + Duration::from_secs(60));
            restart
        })
        .collect();
    assert_eq!(
        waits,
        [2, 4, 8, 16].map(|s| Restart::After(Duration::from_secs(s)))
    );
    assert_eq!(
        supervisor.died("gw", later + Duration::from_secs(30)),
        Restart::GiveUp(6)
    );
    // Another process has its own count; an old death is forgotten.
    assert_eq!(
        supervisor.died("unread-1", start),
        Restart::After(Duration::from_secs(1))
    );
    let much_later = start + CRASH_WINDOW * 3;
    supervisor.due(much_later);
    assert_eq!(
        supervisor.died("gw", much_later),
        Restart::After(Duration::from_secs(1))
    );
}
