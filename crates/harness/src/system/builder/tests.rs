use super::*;

#[test]
fn a_machine_gets_a_partition_per_two_cores_a_cluster_sixteen() {
    assert_eq!(partitions_for(1, 1, 2), 1, "this machine");
    assert_eq!(partitions_for(1, 1, 1), 1);
    assert_eq!(partitions_for(1, 1, 16), 8);
    assert_eq!(partitions_for(1, 3, 2), 3, "one at least for each replica");
    assert_eq!(partitions_for(3, 1, 2), 16);
}
