use super::*;

#[test]
fn hash_is_stable() {
    // Reference values of FNV-1a 64: if these change, every deployed
    // stream's partitioning breaks.
    assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
    assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    assert_eq!(fnv1a32(b""), 0x811c9dc5);
    assert_eq!(fnv1a32(b"a"), 0xe40c292c);
    assert_eq!(
        partition_of("dm:alice:bob", 16),
        partition_of("dm:alice:bob", 16)
    );
}

#[test]
fn partitions_spread() {
    let mut seen = [0u32; 16];
    for i in 0..1600 {
        seen[partition_of(&format!("user-{i}"), 16) as usize] += 1;
    }
    assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
}
