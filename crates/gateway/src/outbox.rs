//! A connection's queued output, bounded in bytes, and the task that writes
//! it to the socket with a timeout per write.
//!
//! Frames are serialized when they are queued, so the bound counts what
//! will go on the wire. A device whose queue passes the bound, or whose
//! socket takes longer than the write timeout to accept a frame, gets an
//! `error` frame `slow_consumer` (when the socket takes it) and close 1008:
//! whatever a client does, the gateway holds at most the bound for it. A
//! closing is its own kind of entry, so no frame's contents (pushed from the
//! bus, say) can close a connection.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures::{Sink, SinkExt};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use crate::frames::FrameError;

/// Close codes: 1008 policy violation, 1009 message too big.
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The most frames one write takes from the queue (then flushed together).
const FRAMES_PER_WRITE: usize = 64;

/// Small on purpose: the channel allocates its slots in blocks, and an
/// idle connection holds one block.
enum Entry {
    Frame(String),
    /// Close after this last frame (if any); everything queued before it
    /// is still written unless the connection is being dropped as slow.
    Close(Box<Closing>),
}

struct Closing {
    last: Option<String>,
    code: u16,
    reason: String,
}

struct Shared {
    queued: AtomicUsize,
    limit: usize,
    /// Set when the connection is dropped as slow: the writer skips what is
    /// still queued and sends only the closing.
    slow: AtomicBool,
    /// Signalled when the writer stops, so the reader stops too.
    done: Notify,
}

#[derive(Clone)]
pub struct Outbox {
    entries: mpsc::UnboundedSender<Entry>,
    shared: Arc<Shared>,
}

/// What a queued frame met: the connection is (being) closed.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

impl Outbox {
    pub fn new(limit: usize) -> (Outbox, Writer) {
        let (entries, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            limit,
            slow: AtomicBool::new(false),
            done: Notify::new(),
        });
        (
            Outbox {
                entries,
                shared: shared.clone(),
            },
            Writer { queue, shared },
        )
    }

    /// Queue a frame; past the bound the connection is closed as slow.
    pub fn push(&self, frame: &Value) -> Result<(), Closed> {
        if self.shared.slow.load(Ordering::Acquire) {
            return Err(Closed); // not worth serializing
        }
        self.push_text(frame.to_string())
    }

    /// Queue a frame already serialized (a reply whose size was checked).
    pub fn push_text(&self, text: String) -> Result<(), Closed> {
        if self.shared.slow.load(Ordering::Acquire) {
            return Err(Closed);
        }
        let size = text.len();
        let queued = self.shared.queued.fetch_add(size, Ordering::AcqRel) + size;
        if queued > self.shared.limit {
            self.shared.queued.fetch_sub(size, Ordering::AcqRel);
            self.drop_as_slow(format!(
                "more than {} bytes queued for this connection: read faster, then reconnect and sync",
                self.shared.limit
            ));
            return Err(Closed);
        }
        self.entries.send(Entry::Frame(text)).map_err(|_| Closed)
    }

    /// Write what is queued, then `last` (if any), then close.
    pub fn close(&self, last: Option<&Value>, code: u16, reason: &str) {
        let _ = self.entries.send(Entry::Close(Box::new(Closing {
            last: last.map(Value::to_string),
            code,
            reason: reason.to_string(),
        })));
    }

    fn drop_as_slow(&self, message: String) {
        if !self.shared.slow.swap(true, Ordering::AcqRel) {
            metrics::counter!("im_gateway_slow_consumers_total").increment(1);
            let error = FrameError::new("slow_consumer", message).to_frame();
            self.close(Some(&error), CLOSE_POLICY, "slow consumer");
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Resolves once the writer has stopped (closed, failed or too slow).
    pub async fn done(&self) {
        self.shared.done.notified().await
    }
}

pub struct Writer {
    queue: mpsc::UnboundedReceiver<Entry>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Write entries until a close, a failed or stalled write, or until every
    /// outbox handle is gone.
    pub async fn run<S>(mut self, mut sink: S, write_timeout: Duration)
    where
        S: Sink<Message> + Unpin,
    {
        let slow = |shared: &Shared| shared.slow.load(Ordering::Acquire);
        while let Some(first) = self.queue.recv().await {
            // What is queued already goes out in one write (one `send`
            // system call when it fits the socket's write buffer): a batch's
            // acks and pushes for one device come together.
            let mut frames = Vec::new();
            let mut closing = None;
            let mut next = Some(first);
            while let Some(entry) = next.take() {
                match entry {
                    Entry::Frame(text) => {
                        frames.push(text);
                        if frames.len() < FRAMES_PER_WRITE {
                            next = self.queue.try_recv().ok();
                        }
                    }
                    Entry::Close(close) => closing = Some(close),
                }
            }
            let size: usize = frames.iter().map(String::len).sum();
            if !frames.is_empty() && !slow(&self.shared) {
                let sent = tokio::time::timeout(write_timeout, async {
                    for text in frames {
                        sink.feed(Message::Text(text.into())).await?;
                    }
                    sink.flush().await
                })
                .await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        // Stalled: the close goes out only if the socket
                        // takes it within a short grace.
                        self.shared.slow.store(true, Ordering::Release);
                        metrics::counter!("im_gateway_slow_consumers_total").increment(1);
                        let error = FrameError::new(
                            "slow_consumer",
                            format!("a write stalled for {write_timeout:?}: read faster, then reconnect and sync"),
                        )
                        .to_frame();
                        let grace = Duration::from_secs(1);
                        let _ = tokio::time::timeout(grace, async {
                            sink.send(Message::Text(error.to_string().into())).await?;
                            sink.send(close_message(CLOSE_POLICY, "slow consumer"))
                                .await
                        })
                        .await;
                        break;
                    }
                }
            }
            self.shared.queued.fetch_sub(size, Ordering::AcqRel);
            if let Some(closing) = closing {
                let Closing { last, code, reason } = *closing;
                let _ = tokio::time::timeout(write_timeout, async {
                    if let Some(text) = last {
                        sink.send(Message::Text(text.into())).await?;
                    }
                    sink.send(close_message(code, &reason)).await
                })
                .await;
                break;
            }
        }
        self.shared.done.notify_one();
    }
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }))
}

#[cfg(test)]
mod tests;
