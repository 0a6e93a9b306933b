//! Distributed tracing (issue 18): one send makes one trace, its spans
//! exported over OTLP/HTTP to a receiver the test runs, from the gateway
//! through every stage to the push that reaches the other device; a W3C
//! `traceparent` given over HTTP is continued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use im_pipeline_tests::{http, service_token, Device, Pipeline};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::json;

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP trace receiver on 127.0.0.1: every span exported to it.
async fn receiver() -> (u16, Arc<Mutex<Vec<Span>>>) {
    use axum::routing::post;
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: bytes::Bytes| {
            let store = store.clone();
            async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut spans = store.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| r.attributes.iter())
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            spans.push(Span {
                                service: service.clone(),
                                name: span.name,
                                trace: hex(&span.trace_id),
                                id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, spans)
}

/// Wait until the trace holding a span named `root` has spans of every
/// name in `names`; returns that trace's spans.
async fn wait_for_trace(
    spans: &Arc<Mutex<Vec<Span>>>,
    root: impl Fn(&Span) -> bool,
    names: &[&str],
) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: Vec<Span> = {
            let spans = spans.lock().unwrap();
            let trace = spans.iter().find(|s| root(s)).map(|s| s.trace.clone());
            spans
                .iter()
                .filter(|s| Some(&s.trace) == trace.as_ref())
                .cloned()
                .collect()
        };
        if names
            .iter()
            .all(|name| found.iter().any(|s| s.name == *name))
        {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "the trace lacks some of {names:?}: it has {:#?}\nall spans: {:#?}",
            found,
            spans.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every span of the trace hangs, parent by parent, under `root`.
fn assert_one_tree(trace: &[Span], root: &Span) {
    let by_id: HashMap<&str, &Span> = trace.iter().map(|s| (s.id.as_str(), s)).collect();
    for span in trace {
        let mut at = span;
        let mut path = vec![at.name.clone()];
        while at.id != root.id {
            at = by_id.get(at.parent.as_str()).unwrap_or_else(|| {
                panic!("{path:?}: no span {} in the trace {trace:#?}", at.parent)
            });
            path.push(at.name.clone());
        }
    }
}

/// A keyed send's stages: dedupe admits it where it is stored (ingest
/// sees only unkeyed events, below).
const STAGES: [&str; 7] = [
    "gateway.send",
    "dedupe",
    "fanout",
    "unread",
    "offline",
    "push",
    "gateway.push",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_send_is_one_trace_through_every_stage_to_the_push() {
    let (otlp, spans) = receiver().await;
    let endpoint = format!("http://127.0.0.1:{otlp}");
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "100".to_string()),
    ];
    let mut pipeline = Pipeline::start_with(env.clone()).await;
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let port = pipeline.start_gateway("gateway", &extra).await;
    let mut alice = Device::connect(port, "alice", "phone").await;
    let mut bob = Device::connect(port, "bob", "laptop").await;
    alice
        .send(json!({"op": "send", "conversation_id": "dm:alice:bob", "client_msg_id": "t1", "kind": "text", "body": {"text": "traced"}}))
        .await;
    alice.expect("ack", Duration::from_secs(20)).await;
    bob.expect("message", Duration::from_secs(20)).await;
    let trace = wait_for_trace(&spans, |s| s.name == "gateway.send", &STAGES).await;
    let root = trace.iter().find(|s| s.name == "gateway.send").unwrap();
    assert!(
        root.parent.is_empty() || root.parent == "0000000000000000",
        "{root:?}"
    );
    assert_one_tree(&trace, root);
    // Each stage reports under its own process's name.
    for (stage, service) in [("dedupe", "im-dedupe"), ("push", "im-push")] {
        let span = trace.iter().find(|s| s.name == stage).unwrap();
        assert!(span.service.contains(service), "{span:?}");
    }
    // Over HTTP, a caller's W3C trace is continued.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{caller_trace}-{caller_span}-01");
    let event = json!({"specversion": "1.0", "id": "t2", "source": "urn:ops", "type": "im.message.send",
        "data": {"conversation_id": "dm:alice:bob", "sender_id": "alice", "kind": "text", "body": {"text": "over http"}}})
    .to_string();
    let (status, body) = http(
        port,
        "POST",
        "/v1/events",
        Some(&service_token()),
        &[
            ("Content-Type", "application/cloudevents+json"),
            ("traceparent", &traceparent),
        ],
        &event,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let continued = wait_for_trace(
        &spans,
        |s| s.trace == caller_trace,
        &["gateway.event", "dedupe", "fanout", "unread", "push"],
    )
    .await;
    let first = continued
        .iter()
        .find(|s| s.name == "gateway.event")
        .unwrap();
    assert_eq!(first.parent, caller_span, "a child of the caller's span");
    assert!(continued
        .iter()
        .all(|s| s.id == first.id || s.parent != caller_span));
    // Published unkeyed by a service, an event passes ingest (which copies
    // it keyed) on its way to dedupe, in the publisher's trace.
    let unkeyed_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let event = json!({"specversion": "1.0", "id": "t3", "source": "urn:ops", "type": "im.message.send",
        "traceparent": format!("00-{unkeyed_trace}-{caller_span}-01"),
        "data": {"conversation_id": "dm:alice:bob", "sender_id": "alice", "kind": "text", "body": {"text": "unkeyed"}}});
    pipeline
        .publish_raw(
            "im.ingest.message.send",
            Default::default(),
            serde_json::to_vec(&event).unwrap(),
        )
        .await;
    let copied = wait_for_trace(
        &spans,
        |s| s.trace == unkeyed_trace,
        &["ingest", "dedupe", "fanout", "unread"],
    )
    .await;
    let ingest = copied.iter().find(|s| s.name == "ingest").unwrap();
    assert!(ingest.service.contains("im-ingest"), "{ingest:?}");
    assert_eq!(ingest.parent, caller_span, "{ingest:?}");
}
