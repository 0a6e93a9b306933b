use super::*;

#[test]
fn the_newest_epochs_consumer_is_the_owners() {
    let names: Vec<String> = [
        "unread-p1-e9",
        "unread-p1-e812",
        "unread-p10-e900",
        "unread-p1-ex",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        newest_consumer(&names, "unread-p1").as_deref(),
        Some("unread-p1-e812")
    );
    assert_eq!(newest_consumer(&names, "unread-p2"), None);
}

#[test]
fn partitions_print_as_ranges() {
    assert_eq!(ranges(&[3, 0, 1, 2, 8, 10, 11]), "0-3 8 10-11");
    assert_eq!(ranges(&[]), "");
    assert_eq!(ranges(&[5]), "5");
}

#[test]
fn replicas_their_shares_and_lag_come_from_the_buckets() {
    let mut leases = Leases::default();
    let ttl = 6_000;
    leases.add(
        "members.unread.unread-1",
        br#"{"pid": 41, "host": "h"}"#,
        1,
        100,
        ttl,
    );
    leases.add("members.unread.unread-2", br#"{"pid": 42}"#, 2, 100, ttl);
    leases.add("members.unread.gone", br#"{"pid": 43}"#, 3, 60_000, ttl);
    leases.add("unread.0", b"unread-1", 10, 100, ttl);
    leases.add("unread.1", b"unread-2", 11, 100, ttl);
    leases.add("unread.2", b"unread-1", 12, 100, ttl);
    leases.add("ingest.0", b"ingest-old", 13, 100, ttl);
    let lag = BTreeMap::from([
        (("unread".to_string(), 0), 5),
        (("unread".to_string(), 2), 2),
    ]);
    let count = |f: &str| if f == "ingest" { 1 } else { 4 };
    let functions = functions(&["ingest", "unread"], &count, &leases, &lag);
    let unread = &functions[1];
    assert_eq!(unread.partitions, 4);
    assert_eq!(unread.replicas.len(), 2, "the expired member is not live");
    assert_eq!(unread.replicas[0].instance, "unread-1");
    assert_eq!(unread.replicas[0].pid, Some(41));
    assert_eq!(unread.replicas[0].partitions, vec![0, 2]);
    assert_eq!(unread.replicas[0].lag, Some(7));
    assert_eq!(unread.replicas[1].partitions, vec![1]);
    assert_eq!(unread.unowned, vec![3]);
    // A holder that has not announced itself (an older version) still shows.
    assert_eq!(functions[0].replicas[0].instance, "ingest-old");
    assert_eq!(functions[0].replicas[0].partitions, vec![0]);
    let json = serde_json::to_value(&functions).unwrap();
    assert!(json[1]["replicas"][0]["partitions"].is_array());
}
