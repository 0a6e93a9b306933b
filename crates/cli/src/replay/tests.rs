use super::*;

#[test]
fn checkpoints_name_each_stream_and_read_the_old_bare_number() {
    let through: std::collections::BTreeMap<String, u64> = [
        ("IM_INGEST_S0".to_string(), 7),
        ("IM_INGEST_S1".to_string(), 12),
    ]
    .into();
    assert_eq!(parse_checkpoint(&format_checkpoint(&through)), through);
    assert_eq!(
        parse_checkpoint("41\n"),
        [("IM_INGEST".to_string(), 41)].into()
    );
    assert!(parse_checkpoint("").is_empty());
}

/// Only an unkeyed original whose copy carries the same payload is
/// skipped: a forged header naming another event's seq skips nothing.
#[test]
fn an_original_is_skipped_only_for_a_copy_of_itself() {
    let original = incoming(
        "im.ingest.message.send".into(),
        Bytes::from_static(b"event"),
        7,
        0,
    );
    let copied = [(7, digest_of(b"event"))].into();
    assert!(replaced_by_copy(&copied, &original));
    let forged = [(7, digest_of(b"another event"))].into();
    assert!(!replaced_by_copy(&forged, &original));
    let keyed = incoming(
        "im.keyed.1.672e31.message.send".into(),
        Bytes::from_static(b"event"),
        7,
        0,
    );
    assert!(!replaced_by_copy(&copied, &keyed));
}

#[test]
fn shards_merge_by_the_time_they_stored_each_event() {
    assert_eq!(earliest(&[None, None]), None);
    assert_eq!(earliest(&[Some((20, 1)), Some((10, 9)), None]), Some(1));
    assert_eq!(
        earliest(&[Some((10, 5)), Some((10, 1))]),
        Some(0),
        "ties by stream"
    );
}
