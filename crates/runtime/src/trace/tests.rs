use super::*;

#[test]
fn without_an_endpoint_no_span_is_made_and_the_trace_passes_on() {
    let parent = Trace::parse(
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        None,
    );
    assert!(stage_span("ingest", parent.as_ref(), Some(1), None, 1).is_none());
    let mut spans = Spans::default();
    assert_eq!(
        spans.event("ingest", parent.as_ref(), None, None, 1),
        parent
    );
    assert!(spans.0.is_empty());
}
