use super::*;

#[test]
fn every_stream_is_bounded_and_refuses_when_full() {
    let none = MaxBytes::default();
    for def in &topology().streams {
        let config = stream_config_with(def, 1, 4, &none);
        assert!(config.max_bytes > 0, "{} has no max_bytes", def.name);
        assert_eq!(config.discard, stream::DiscardPolicy::New, "{}", def.name);
    }
    let total: i64 = topology()
        .streams
        .iter()
        .filter_map(|def| def.max_bytes)
        .sum();
    assert!(
        total < 20 << 30,
        "under nats.conf's max_file_store (20GB: GiB to nats-server): {total}"
    );
    let lower = MaxBytes::parse("1000000, IM_INGEST=5000").unwrap();
    let ingest = topology()
        .streams
        .iter()
        .find(|d| d.name == "IM_INGEST")
        .unwrap();
    let dlq = topology()
        .streams
        .iter()
        .find(|d| d.name == "IM_DLQ")
        .unwrap();
    assert_eq!(lower.of(ingest), Some(5000));
    assert_eq!(lower.of(dlq), Some(1_000_000));
    assert_eq!(MaxBytes::parse("").unwrap(), MaxBytes::default());
    for bad in ["-5", "IM_INGEST=", "lots", "IM_INGEST=0"] {
        assert!(
            MaxBytes::parse(bad)
                .unwrap_err()
                .contains("IM_STREAM_MAX_BYTES"),
            "{bad}"
        );
    }
}

fn def(name: &str) -> &'static StreamDef {
    topology().streams.iter().find(|d| d.name == name).unwrap()
}

/// Sharded, each partition is in exactly one shard (p % S), shard 0
/// also holds ingest's unkeyed subjects, the bytes are shared out, and
/// unpartitioned streams stay whole.
#[test]
fn shards_split_the_partitions_and_the_bytes() {
    let ingest = def("IM_INGEST");
    assert_eq!(shard_defs(ingest, 1, 16).len(), 1);
    assert_eq!(shard_defs(ingest, 1, 16)[0].name, "IM_INGEST");
    let shards = shard_defs(ingest, 3, 16);
    let names: Vec<&str> = shards.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["IM_INGEST_S0", "IM_INGEST_S1", "IM_INGEST_S2"]);
    let mut seen = Vec::new();
    for (shard, d) in shards.iter().enumerate() {
        assert!(!d.keyed, "the account maps keyed subjects, not the stream");
        assert_eq!(d.shards, 3);
        assert_eq!(d.max_bytes, ingest.max_bytes.map(|b| b / 3));
        for subject in &d.subjects {
            if let Some(p) = subject
                .strip_prefix("im.keyed.")
                .and_then(|rest| rest.strip_suffix(".>"))
            {
                let p: u32 = p.parse().unwrap();
                assert_eq!(p % 3, shard as u32, "{subject} in shard {shard}");
                seen.push(p);
            }
        }
        let unkeyed = d.subjects.iter().any(|s| s.starts_with("im.ingest."));
        assert_eq!(unkeyed, shard == 0, "{:?}", d.subjects);
    }
    seen.sort();
    assert_eq!(seen, (0..16).collect::<Vec<_>>());
    let config = stream_config_with(&shards[1], 1, 16, &MaxBytes::default());
    assert_eq!(
        config.metadata.get(SHARDS_METADATA).map(String::as_str),
        Some("3")
    );
    assert!(config.subject_transform.is_none());
    // A named bound is shared out like the stream's own.
    let bounds = MaxBytes::parse("IM_INGEST=3000").unwrap();
    assert_eq!(bounds.of(&shards[2]), Some(1000));
    assert_eq!(shard_defs(def("IM_DLQ"), 3, 16).len(), 1);
    assert_eq!(shard_defs(def("IM_DLQ"), 3, 16)[0].name, "IM_DLQ");
}

#[test]
fn partitions_find_their_shard_and_names_their_stream() {
    assert_eq!(stream_for_with("IM_TIMELINE", 5, 3), "IM_TIMELINE_S2");
    assert_eq!(stream_for_with("IM_TIMELINE", 5, 1), "IM_TIMELINE");
    assert_eq!(stream_for_with("IM_DLQ", 5, 3), "IM_DLQ");
    assert_eq!(base_name("IM_DELIVERY_S12"), "IM_DELIVERY");
    assert_eq!(base_name("IM_DELIVERY"), "IM_DELIVERY");
    assert_eq!(base_name("IM_X_Sa"), "IM_X_Sa");
    let existing: Vec<String> = [
        "IM_DLQ",
        "IM_TIMELINE_S1",
        "IM_INGEST_S10",
        "IM_TIMELINE_S0",
        "KV_IM_LEASES",
        "IM_INGEST_S2",
        "IM_INGEST_S0",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        partitioned_in(&existing),
        [
            "IM_INGEST_S0",
            "IM_INGEST_S2",
            "IM_INGEST_S10",
            "IM_TIMELINE_S0",
            "IM_TIMELINE_S1"
        ]
    );
    assert_eq!(nats_mappings(1, 16), "");
    let mapping = nats_mappings(3, 16);
    assert!(mapping.contains("\"im.ingest.k.*.>\""), "{mapping}");
    assert!(mapping.contains("partition(16,1)"), "{mapping}");
}

#[test]
fn another_shard_count_than_the_streams_is_refused() {
    assert!(check_shards("IM_INGEST", None, 3).is_ok());
    assert!(check_shards("IM_INGEST", Some(3), 3).is_ok());
    let refused = check_shards("IM_INGEST", Some(1), 3)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("IM_STREAM_SHARDS=1"), "{refused}");
}

#[test]
fn consumer_names_carry_the_owners_epoch() {
    let def = topology().consumer("unread").unwrap();
    assert_eq!(epoch_durable_name(def, 1, 42), "unread-p1-e42");
    assert_eq!(consumer_epoch(def, 1, "unread-p1-e42"), Some(42));
    assert_eq!(consumer_epoch(def, 1, "unread-p1"), Some(0));
    assert_eq!(consumer_epoch(def, 1, "unread-p10-e42"), None);
    assert_eq!(consumer_epoch(def, 1, "unread-p1-ex"), None);
    assert_eq!(consumer_epoch(def, 1, "offline-p1-e42"), None);
}

/// The consumers of earlier releases whose places this one's take: every
/// version of ingest's partition consumers and of its single consumer
/// from before it was partitioned (dedupe's partition p takes ingest's
/// p; ingest's own unkeyed consumer takes partition 0's, which read the
/// unkeyed events too).
#[test]
fn predecessors_are_the_earlier_releases_consumers() {
    let dedupe = topology().consumer("dedupe").unwrap();
    assert_eq!(filter_subject(dedupe, 2), "im.keyed.2.>");
    assert!(is_predecessor(dedupe, 2, "ingest-p2-e7"));
    assert!(is_predecessor(dedupe, 2, "ingest-p2"));
    assert!(is_predecessor(dedupe, 2, "ingest"));
    assert!(is_predecessor(dedupe, 2, "ingest-e900"));
    assert!(!is_predecessor(dedupe, 2, "ingest-p3-e7"));
    assert!(!is_predecessor(dedupe, 2, "ingest-p21-e7"));
    assert!(!is_predecessor(dedupe, 2, "dedupe-p2-e7"));
    let ingest = topology().consumer("ingest").unwrap();
    assert_eq!(topology().partition_count(ingest), 1);
    assert_eq!(consumer_config(ingest, 0).filter_subject, "im.ingest.>");
    assert_eq!(epoch_durable_name(ingest, 0, 7), "ingest-unkeyed-e7");
    assert!(is_predecessor(ingest, 0, "ingest-p0-e7"));
    assert!(is_predecessor(ingest, 0, "ingest"));
    assert!(!is_predecessor(ingest, 0, "ingest-p1-e7"));
    assert_eq!(
        consumer_epoch(ingest, 0, "ingest-p0-e7"),
        None,
        "a predecessor is no version of its successor: it is handed over, not taken over"
    );
}

#[test]
fn a_new_owner_starts_after_the_highest_floor_of_every_older_consumer() {
    let older = |epoch: u64, ack_floor: u64| PartitionConsumer {
        name: format!("unread-p1-e{epoch}"),
        epoch,
        ack_floor,
    };
    assert_eq!(start_after(&[]), None, "no older owner: from the start");
    assert_eq!(start_after(&[older(3, 0)]), None);
    assert_eq!(start_after(&[older(3, 40), older(7, 95)]), Some(96));
    assert_eq!(
        start_after(&[older(7, 95), older(3, 40)]),
        Some(96),
        "order of the names does not matter"
    );
}

#[test]
fn streams_made_for_another_partition_count_are_refused() {
    assert!(check_partitions("IM_ACCEPTED", Some("16"), 16).is_ok());
    assert!(
        check_partitions("IM_ACCEPTED", None, 16).is_ok(),
        "older streams had 16"
    );
    let refused = check_partitions("IM_ACCEPTED", Some("64"), 16)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("created for 64") && refused.contains("IM_PARTITIONS=64"),
        "{refused}"
    );
    assert!(check_partitions("IM_ACCEPTED", None, 4).is_err());
}

#[test]
fn topology_is_consistent_with_the_subject_constants() {
    let topology = topology();
    for function in ["ingest", "dedupe", "fanout", "unread"] {
        let def = topology.consumer(function).expect(function);
        assert!(
            topology.streams.iter().any(|s| s.name == def.stream),
            "{function}"
        );
    }
    let names: Vec<&str> = topology.streams.iter().map(|s| s.name.as_str()).collect();
    use im_events::subjects::*;
    for name in [
        STREAM_INGEST,
        STREAM_TIMELINE,
        STREAM_DELIVERY,
        STREAM_EVENTS,
        STREAM_DLQ,
    ] {
        assert!(names.contains(&name), "{name}");
    }
    assert!(
        !names.contains(&STREAM_ACCEPTED),
        "IM_ACCEPTED is an earlier release's, drained, not made"
    );
    let dedupe = topology.consumer("dedupe").unwrap();
    assert_eq!(filter_subject(dedupe, 3), "im.keyed.3.>");
    let retired = dedupe.retired.as_ref().unwrap();
    assert_eq!(retired.stream, STREAM_ACCEPTED);
    assert!(im_events::subjects::accepted_subject(3, "im.message.send")
        .starts_with(&retired.filter.replace("{p}", "3").replace('>', "")));
    let unread = topology.consumer("unread").unwrap();
    assert_eq!(filter_subject(unread, 5), "im.delivery.5.>");
    assert!(im_events::subjects::delivery_subject(5, "message").starts_with("im.delivery.5."));
    assert_eq!(topology.partition_count(unread), topology.partitions.user);
}

#[test]
fn a_stage_on_the_senders_path_waits_for_more_only_when_it_is_behind() {
    let topology: Topology = serde_json::from_str(STREAMS_JSON).unwrap();
    let dedupe = topology.consumer("dedupe").unwrap();
    let full = topology.consumer_defaults.fetch_batch;
    assert!(
        dedupe.linger.is_zero(),
        "dedupe's commit is the sender's ack"
    );
    assert!(!dedupe.busy_linger.is_zero());
    // A moderate rate: batches of a few, and nothing waits.
    for ready in 0..BUSY_BATCH {
        assert_eq!(dedupe.linger_for(ready, full), Duration::ZERO, "{ready}");
    }
    // Behind: the batch waits for more, unless it is already full.
    assert_eq!(dedupe.linger_for(BUSY_BATCH, full), dedupe.busy_linger);
    assert_eq!(dedupe.linger_for(full - 1, full), dedupe.busy_linger);
    assert_eq!(dedupe.linger_for(full, full), Duration::ZERO);
    // A stage off the path waits its linger for any batch not full.
    let fanout = topology.consumer("fanout").unwrap();
    assert_eq!(fanout.linger_for(1, full), fanout.linger);
    assert_eq!(fanout.linger_for(full, full), Duration::ZERO);
    assert_eq!(fanout.linger_for(0, full), Duration::ZERO);
}
