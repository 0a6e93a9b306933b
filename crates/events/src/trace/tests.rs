use super::*;

const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn only_well_formed_traceparents_are_kept() {
    assert!(valid_traceparent(GOOD));
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    ] {
        assert!(!valid_traceparent(bad), "{bad:?}");
    }
    assert!(valid_traceparent(
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
    ));
}

#[test]
fn a_bad_traceparent_or_tracestate_is_dropped_not_refused() {
    assert_eq!(Trace::parse(Some("nonsense"), Some("a=b")), None);
    let trace = Trace::parse(Some(GOOD), Some("congo=t61rcWkgMzE")).unwrap();
    assert_eq!(trace.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    let long = "a=".to_string() + &"b".repeat(MAX_TRACESTATE);
    assert_eq!(
        Trace::parse(Some(GOOD), Some(&long)).unwrap().tracestate,
        None
    );
    assert_eq!(
        Trace::parse(Some(GOOD), Some("a=\u{7}"))
            .unwrap()
            .tracestate,
        None
    );
}
