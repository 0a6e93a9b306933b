use super::*;
use serde_json::json;

/// A sink that records what it is given, or never accepts anything.
struct Recorder {
    sent: Arc<std::sync::Mutex<Vec<Message>>>,
    stalled: bool,
    flushes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Sink<Message> for Recorder {
    type Error = std::io::Error;
    fn poll_ready(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.stalled {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Ok(()))
        }
    }
    fn start_send(self: std::pin::Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.sent.lock().unwrap().push(item);
        Ok(())
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn texts(sent: &[Message]) -> Vec<String> {
    sent.iter()
        .map(|m| match m {
            Message::Text(t) => t.to_string(),
            Message::Close(Some(c)) => format!("close {}", c.code),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn past_the_bound_the_queue_is_dropped_and_the_connection_closed() {
    let (outbox, writer) = Outbox::new(100);
    let frame = json!({"op": "message", "pad": "x".repeat(30)});
    let mut accepted = 0;
    while outbox.push(&frame).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, 100 / frame.to_string().len());
    assert_eq!(outbox.push(&json!({"op": "pong"})), Err(Closed));
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Recorder {
        sent: sent.clone(),
        stalled: false,
        flushes: Default::default(),
    };
    writer.run(sink, Duration::from_secs(1)).await;
    let sent = texts(&sent.lock().unwrap());
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].contains("slow_consumer"), "{sent:?}");
    assert_eq!(sent[1], "close 1008");
    outbox.done().await;
}

#[tokio::test]
async fn a_stalled_write_ends_the_writer() {
    let (outbox, writer) = Outbox::new(1 << 20);
    outbox.push(&json!({"op": "pong"})).unwrap();
    let sink = Recorder {
        sent: Default::default(),
        stalled: true,
        flushes: Default::default(),
    };
    let started = std::time::Instant::now();
    writer.run(sink, Duration::from_millis(50)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(outbox.push(&json!({"op": "pong"})), Err(Closed));
    outbox.done().await;
}

#[tokio::test]
async fn a_close_follows_what_was_queued_and_frames_cannot_close() {
    let (outbox, writer) = Outbox::new(1 << 20);
    outbox
        .push(&json!({"__close": 1000, "reason": "from the bus"}))
        .unwrap();
    outbox.push(&json!({"op": "pong"})).unwrap();
    outbox.close(
        Some(&json!({"op": "error", "code": "token_expired"})),
        1008,
        "expired",
    );
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Recorder {
        sent: sent.clone(),
        stalled: false,
        flushes: Default::default(),
    };
    writer.run(sink, Duration::from_secs(1)).await;
    let sent = texts(&sent.lock().unwrap());
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(sent[0].contains("__close"));
    assert!(sent[2].contains("token_expired"));
    assert_eq!(sent[3], "close 1008");
    assert_eq!(outbox.queued_bytes(), 0);
}

#[tokio::test]
async fn frames_queued_together_are_written_with_one_flush() {
    let (outbox, writer) = Outbox::new(1 << 20);
    for n in 0..(FRAMES_PER_WRITE + 6) {
        outbox.push(&json!({"op": "ack", "n": n})).unwrap();
    }
    outbox.close(None, 1000, "done");
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let flushes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sink = Recorder {
        sent: sent.clone(),
        stalled: false,
        flushes: flushes.clone(),
    };
    writer.run(sink, Duration::from_secs(1)).await;
    let sent = texts(&sent.lock().unwrap());
    assert_eq!(sent.len(), FRAMES_PER_WRITE + 7, "{sent:?}");
    for (n, text) in sent.iter().take(FRAMES_PER_WRITE + 6).enumerate() {
        assert!(text.contains(&format!("\"n\":{n}")), "in order: {sent:?}");
    }
    assert_eq!(sent.last().map(String::as_str), Some("close 1000"));
    // Two writes of queued frames (64, then 6), then the close's own.
    assert_eq!(flushes.load(Ordering::Relaxed), 3);
    assert_eq!(outbox.queued_bytes(), 0);
}
