use super::*;

fn shares(owners: &HashMap<u32, String>) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for owner in owners.values() {
        *count.entry(owner.clone()).or_default() += 1;
    }
    count
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("unread-{i}")).collect()
}

#[test]
fn every_replica_owns_an_even_share_and_each_partition_has_one_owner() {
    for partitions in [1u32, 4, 16, 64] {
        let all: Vec<u32> = (0..partitions).collect();
        for k in 1..=5 {
            let owners = assignment("unread", &all, &names(k));
            assert_eq!(owners.len(), partitions as usize, "every partition owned");
            let (low, high) = (partitions as usize / k, (partitions as usize).div_ceil(k));
            for (owner, count) in shares(&owners) {
                assert!(
                    count >= low && count <= high,
                    "{owner} owns {count} of {partitions} with {k}"
                );
            }
            // Every replica computes the same, whatever order it lists them in.
            let mut reversed = names(k);
            reversed.reverse();
            assert_eq!(assignment("unread", &all, &reversed), owners);
        }
    }
}

#[test]
fn a_join_or_a_leave_moves_few_partitions() {
    let all: Vec<u32> = (0..64).collect();
    let two = assignment("unread", &all, &names(2));
    let three = assignment("unread", &all, &names(3));
    let moved = all.iter().filter(|p| two[p] != three[p]).count();
    // The minimum is 21 (the newcomer's share); far fewer than a
    // reshuffle (about two thirds, 43).
    assert!(
        moved <= 32,
        "{moved} of 64 moved when a third replica joined"
    );
    let survivors: Vec<String> = names(3).into_iter().filter(|m| m != "unread-2").collect();
    let after_leave = assignment("unread", &all, &survivors);
    // Survivors keep most of what they had.
    let kept = all
        .iter()
        .filter(|p| three[*p] != "unread-2" && three[*p] == after_leave[*p])
        .count();
    assert!(kept >= 32, "survivors kept only {kept} of their partitions");
}

#[test]
fn hand_overs_wait_until_the_live_set_holds_still() {
    let ttl = Duration::from_secs(2);
    let start = std::time::Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut settling = Settling::new(ttl, start);
    let two = names(2);
    let one = names(1);
    assert!(!settling.settled(Some(&two), at(0)));
    assert!(!settling.settled(Some(&two), at(1_900)));
    assert!(settling.settled(Some(&two), at(2_000)));
    // One missed announcement: the set changes, and back again.
    assert!(!settling.settled(Some(&one), at(2_600)));
    assert!(!settling.settled(Some(&two), at(3_200)));
    assert!(!settling.settled(Some(&two), at(5_100)));
    assert!(settling.settled(Some(&two), at(5_200)));
    // The order replicas are listed in does not matter.
    let reversed: Vec<String> = two.iter().rev().cloned().collect();
    assert!(settling.settled(Some(&reversed), at(5_300)));
}

#[test]
fn a_renewal_that_did_not_reach_the_bucket_keeps_the_lease_for_a_while() {
    let ttl = Duration::from_secs(6);
    let timed_out = kv::UpdateError::new(kv::UpdateErrorKind::TimedOut);
    let moved_on = kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision);
    assert!(keep_through(&timed_out, Duration::from_secs(2), ttl));
    assert!(!keep_through(&timed_out, Duration::from_secs(4), ttl));
    assert!(!keep_through(&moved_on, Duration::from_secs(1), ttl));
}
