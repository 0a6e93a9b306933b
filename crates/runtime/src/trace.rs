//! Distributed tracing over OTLP: one span per stage an event passes
//! through, each a child of the trace the event carries (the CloudEvents
//! distributed-tracing extension, [`im_events::Trace`]), exported when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (OTLP over HTTP, protobuf; the
//! usual `OTEL_*` variables tune it), and nothing at all when it is not:
//! no span is even made.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use im_events::Trace;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of stage spans: only they go to the exporter.
pub const TARGET: &str = "im_trace";

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported (and so made at all).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporting layer for `service`, when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
pub fn layer<S>(service: &str) -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::Layer as _;
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()));
    if !configured {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("tracing: cannot export over OTLP ({error}); check OTEL_EXPORTER_OTLP_ENDPOINT. Going on without traces.");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("im");
    let _ = PROVIDER.set(provider);
    ENABLED.store(true, Ordering::Relaxed);
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::INFO),
            ),
    )
}

/// Send what is still buffered (at exit).
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// A span of `stage` (`ingest`, `dedupe`, `gateway.push`, …), a child of
/// `parent`'s trace (a root when there is none), with the partition, the
/// event's seq and the size of the batch it came in as fields. It ends
/// when dropped. None when tracing is off.
pub fn stage_span(
    stage: &'static str,
    parent: Option<&Trace>,
    partition: Option<u32>,
    seq: Option<u64>,
    batch: usize,
) -> Option<tracing::Span> {
    if !enabled() {
        return None;
    }
    let span = tracing::info_span!(
        target: TARGET,
        "stage",
        otel.name = stage,
        otel.kind = "consumer",
        im.partition = partition.map(i64::from),
        im.seq = seq,
        im.batch = batch,
    );
    if let Some(context) = parent.and_then(context_of) {
        let _ = span.set_parent(context);
    }
    Some(span)
}

fn context_of(trace: &Trace) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::TraceContextExt as _;
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_string(), trace.traceparent.clone());
    if let Some(state) = &trace.tracestate {
        carrier.insert("tracestate".to_string(), state.clone());
    }
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// The trace context of `span` as an event carries it onward: its children
/// (the next stages) hang under it.
pub fn trace_of(span: &tracing::Span) -> Option<Trace> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    Trace::parse(
        carrier.get("traceparent").map(String::as_str),
        carrier.get("tracestate").map(String::as_str),
    )
}

/// The spans of one batch at one stage: made as its events are read, ended
/// together when the batch is done (dropped).
#[derive(Default)]
pub struct Spans(Vec<tracing::Span>);

impl Spans {
    /// A span for an event of the batch; returns the trace its outputs
    /// carry on: this span's, or the event's own when tracing is off.
    pub fn event(
        &mut self,
        stage: &'static str,
        parent: Option<&Trace>,
        partition: Option<u32>,
        seq: Option<u64>,
        batch: usize,
    ) -> Option<Trace> {
        match stage_span(stage, parent, partition, seq, batch) {
            Some(span) => {
                let trace = trace_of(&span).or_else(|| parent.cloned());
                self.0.push(span);
                trace
            }
            None => parent.cloned(),
        }
    }
}

/// The spans of a batch of deliveries at `stage` (unread, offline): one
/// per delivered event, and the traces they carry on, by the committed
/// message (conversation, seq) they deliver. Reads the batch only when
/// tracing is on.
pub fn delivery_spans(
    stage: &'static str,
    partition: u32,
    batch: &[crate::Incoming],
) -> (Spans, HashMap<(String, u64), Trace>) {
    let mut spans = Spans::default();
    let mut traces = HashMap::new();
    if !enabled() {
        return (spans, traces);
    }
    for message in batch {
        let Ok(delivery) = serde_json::from_slice::<im_events::Delivery>(&message.payload) else {
            continue;
        };
        for data in delivery.payload.into_data() {
            let Some(parent) = &data.trace else { continue };
            let seq = match &data.event {
                im_events::TimelineEvent::Committed(message) => Some(message.seq),
                _ => None,
            };
            let child = spans.event(stage, Some(parent), Some(partition), seq, batch.len());
            if let (Some(seq), Some(child)) = (seq, child) {
                traces.insert((data.event.conversation_id().to_string(), seq), child);
            }
        }
    }
    (spans, traces)
}

/// A core NATS message's headers carrying `trace` on (W3C names).
pub fn headers(trace: &Trace) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", trace.traceparent.as_str());
    if let Some(state) = &trace.tracestate {
        headers.insert("tracestate", state.as_str());
    }
    headers
}

/// The trace a core NATS message's headers carry.
pub fn from_headers(headers: Option<&async_nats::HeaderMap>) -> Option<Trace> {
    let headers = headers?;
    Trace::parse(
        headers.get("traceparent").map(|v| v.as_str()),
        headers.get("tracestate").map(|v| v.as_str()),
    )
}

#[cfg(test)]
mod tests;
