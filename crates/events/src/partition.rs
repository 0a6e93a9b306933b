//! Stable partitioning of conversations and users.
//!
//! The hash must never change between versions: partition numbers are baked
//! into stream subjects and consumer names. FNV-1a 64 is small, stable and
//! spreads short ids well enough; it is written out here so no dependency
//! upgrade can change it.

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// FNV-1a 32: the hash nats-server's `partition(n, …)` subject transform
/// takes of a token (its partition is the hash modulo n).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The partition nats-server's transform gives `token` among `count`.
pub fn nats_partition(token: &str, count: u32) -> u32 {
    fnv1a32(token.as_bytes()) % count.max(1)
}

/// The partition of `key` among `count` partitions.
pub fn partition_of(key: &str, count: u32) -> u32 {
    assert!(count > 0, "partition count must be positive");
    (fnv1a64(key.as_bytes()) % u64::from(count)) as u32
}

#[cfg(test)]
mod tests;
