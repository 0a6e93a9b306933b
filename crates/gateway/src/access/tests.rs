use super::*;

fn gateway(id: &str, connections: u64, weight: u32) -> Registration {
    Registration {
        id: id.into(),
        url: format!("ws://{id}/v1/ws"),
        connections,
        draining: false,
        weight,
    }
}

fn live(list: &[Registration]) -> Vec<(Registration, i64)> {
    list.iter().map(|r| (r.clone(), 10_000)).collect()
}

const NOW: i64 = 11_000;

#[test]
fn least_connections_picks_the_emptiest_and_never_a_dead_or_draining_one() {
    let mut all = live(&[gateway("a", 10, 1), gateway("b", 3, 1), gateway("c", 7, 1)]);
    let pick = |all: &[(Registration, i64)]| {
        choose(Strategy::LeastConnections, all, NOW, "u", 0, 0.5).map(|r| r.id.clone())
    };
    assert_eq!(pick(&all).as_deref(), Some("b"));
    all[1].0.draining = true;
    assert_eq!(pick(&all).as_deref(), Some("c"));
    // c stopped refreshing longer than the TTL ago: dead.
    all[2].1 = NOW - REGISTRATION_TTL.as_millis() as i64 - 1;
    assert_eq!(pick(&all).as_deref(), Some("a"));
    all[0].0.draining = true;
    assert_eq!(pick(&all), None);
}

#[test]
fn consistent_hash_keeps_users_where_they_were() {
    let three = live(&[gateway("a", 0, 1), gateway("b", 0, 1), gateway("c", 0, 1)]);
    let two: Vec<_> = three.iter().filter(|(r, _)| r.id != "c").cloned().collect();
    let users: Vec<String> = (0..300).map(|i| format!("user{i}")).collect();
    let mut moved = 0;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for user in &users {
        let before = choose(Strategy::ConsistentHash, &three, NOW, user, 0, 0.0).unwrap();
        let again = choose(Strategy::ConsistentHash, &three, NOW, user, 7, 0.9).unwrap();
        assert_eq!(before.id, again.id, "the same user, the same gateway");
        *counts.entry(before.id.clone()).or_default() += 1;
        let after = choose(Strategy::ConsistentHash, &two, NOW, user, 0, 0.0).unwrap();
        if before.id != "c" {
            assert_eq!(before.id, after.id, "only c's users move when c leaves");
        } else {
            moved += 1;
        }
    }
    assert!(counts.values().all(|n| *n > 60), "spread: {counts:?}");
    assert_eq!(moved, counts["c"]);
}

#[test]
fn round_robin_takes_each_in_turn_and_weighted_random_follows_weights() {
    let all = live(&[gateway("a", 0, 1), gateway("b", 0, 3)]);
    let turns: Vec<String> = (0..4)
        .map(|turn| {
            choose(Strategy::RoundRobin, &all, NOW, "u", turn, 0.0)
                .unwrap()
                .id
                .clone()
        })
        .collect();
    assert_eq!(turns, ["a", "b", "a", "b"]);
    let mut b = 0;
    for i in 0..1000 {
        let random = i as f64 / 1000.0;
        if choose(Strategy::WeightedRandom, &all, NOW, "u", 0, random)
            .unwrap()
            .id
            == "b"
        {
            b += 1;
        }
    }
    assert_eq!(b, 750, "b has three quarters of the weight");
    assert_eq!(Strategy::parse("round_robin"), Some(Strategy::RoundRobin));
    assert_eq!(Strategy::parse("fastest"), None);
}
