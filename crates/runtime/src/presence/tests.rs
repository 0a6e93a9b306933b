use super::*;

#[test]
fn presence_expires_without_a_delete() {
    let mut presence = Presence::default();
    presence.seen("bob", "phone", 1_000, "gw-a");
    assert!(presence.is_online("bob", 20_000, 30_000));
    assert!(
        !presence.is_online("bob", 40_000, 30_000),
        "a dead gateway's entry ages out"
    );
    presence.seen("bob", "laptop", 39_000, "gw-b");
    assert!(presence.device_online("bob", "laptop", 40_000, 30_000));
    assert!(!presence.device_online("bob", "phone", 40_000, 30_000));
    assert!(!presence.device_online("bob", "tablet", 40_000, 30_000));
    assert!(presence.is_online("bob", 40_000, 30_000));
    presence.gone("bob", "laptop");
    presence.gone("bob", "phone");
    assert!(!presence.is_online("bob", 40_000, 30_000));
    assert!(!presence.is_online("carol", 0, 30_000));
}

#[test]
fn the_view_forgets_devices_that_stopped_refreshing() {
    let mut presence = Presence::default();
    for n in 0..1000 {
        presence.seen(&format!("u{n}"), "phone", 1_000, "gw-a");
    }
    presence.seen("bob", "phone", 1_000, "gw-a");
    presence.seen("bob", "laptop", 35_000, "gw-b");
    assert_eq!(presence.len(), 1002);
    assert_eq!(presence.sweep(40_000, 30_000), 1001);
    assert_eq!(presence.len(), 1);
    assert!(presence.device_online("bob", "laptop", 40_000, 30_000));
    assert_eq!(presence.sweep(40_000, 30_000), 0, "what is fresh stays");
    assert_eq!(presence.sweep(100_000, 30_000), 1);
    assert!(presence.is_empty());
}

#[test]
fn pushes_go_to_each_gateway_holding_a_fresh_device_once() {
    let mut presence = Presence::default();
    presence.seen("bob", "phone", 10_000, "gw-a");
    presence.seen("bob", "laptop", 10_000, "gw-b");
    presence.seen("bob", "tablet", 10_000, "gw-a");
    presence.seen("bob", "old", 1_000, "gw-c");
    let mut gateways = presence.gateways("bob", 20_000, 15_000);
    gateways.sort();
    assert_eq!(gateways, ["gw-a", "gw-b"]);
    let value = presence_value("bob", "phone", "gw-a");
    assert_eq!(gateway_of(value.as_bytes()), "gw-a");
}
