//! The fetch → handle → ack loop of one partition, and [`run_function`],
//! which runs it for every partition this replica owns.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use im_events::ErrorCode;

use crate::dlq::{publish_dead_letter, DeadLetter};
use crate::lease::{run_partitions, Claim};
use crate::telemetry::{BATCH_SECONDS, DEAD_LETTERED, FAILED, LAG, PROCESSED};
use crate::topology::{ensure_streams, take_over_consumer, topology, ConsumerDef};
use crate::Shutdown;

/// One message as the handler sees it.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    pub stream_seq: u64,
    pub delivered: i64,
    /// When JetStream stored the message (unix ms): stable under replay.
    pub published_ms: i64,
    /// How long the handler has been holding this message back
    /// ([`Outcome::Hold`]); 0 the first time it sees it.
    pub held_ms: u64,
}

/// How long a handler may hold a message back waiting for an earlier one:
/// long enough for JetStream to redeliver a message that was lost on its way
/// (after `ack_wait`), with room to spare.
pub fn hold_limit() -> Duration {
    Duration::from_secs(topology().consumer_defaults.ack_wait_secs * 3)
}

/// A message's identity, for the rejection event, where readable.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub source: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    /// The stage whose checks refused it, where that is not the consuming
    /// function (dedupe admits the keyed events it reads with ingest's
    /// checks): the dead letter goes to that stage's subject, so every
    /// refusal of bad input is under `im.dlq.ingest` wherever it happened.
    pub stage: Option<&'static str>,
}

impl From<im_events::admission::EventIdentity> for Identity {
    fn from(identity: im_events::admission::EventIdentity) -> Self {
        Identity {
            source: identity.source,
            event_id: identity.event_id,
            event_type: identity.event_type,
            stage: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// Effects are durable: ack.
    Done,
    /// Transient failure that the runtime already retried `max_deliver`
    /// times in place: dead-letter it. (Handlers report transient failures
    /// as `HandlerError::Transient`; the runtime retries those. An outage
    /// of the broker, `HandlerError::Unavailable`, never ends here.)
    Retry(String),
    /// Bad input: dead-letter with the reason and terminate.
    Reject {
        error: im_events::EventError,
        identity: Identity,
    },
    /// An earlier message this one must follow has not arrived yet (JetStream
    /// redelivers one lost on its way only after `ack_wait`, behind newer
    /// ones; a publish retried across a leader change lands after the ones
    /// that followed it). The runtime keeps it, unacknowledged and marked in
    /// progress, and hands it back with the next batch, first, with
    /// `held_ms` set; a handler stops holding after [`hold_limit`].
    Hold,
    /// Done, but some of the events this message carries (an envelope of
    /// several) were refused: each is dead-lettered on its own, with its
    /// reason, before the message is acknowledged.
    Partial(Vec<Rejection>),
}

/// One refused event inside an envelope.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub error: im_events::EventError,
    pub identity: Identity,
    /// The subject the event would have had on its own.
    pub subject: String,
    /// The event as it was in the envelope.
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The store refused our epoch: another replica owns the partition now.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Nothing of the batch is known to be durable: retry all of it.
    #[error("transient: {0}")]
    Transient(String),
    /// The broker did not take an output (a stream without a leader for
    /// the moment, no answer in time): nothing is wrong with the batch.
    /// Retried in place as long as it takes, soon after the broker is back,
    /// and never counted against `max_deliver`: an outage must not
    /// dead-letter good events.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

impl From<crate::publish::PublishError> for HandlerError {
    fn from(error: crate::publish::PublishError) -> Self {
        match error {
            crate::publish::PublishError::Failed(reason) => HandlerError::Unavailable(reason),
            full @ crate::publish::PublishError::StorageFull(_) => {
                HandlerError::Transient(full.to_string())
            }
        }
    }
}

impl From<im_store::StoreError> for HandlerError {
    fn from(error: im_store::StoreError) -> Self {
        match error {
            im_store::StoreError::Fenced { .. } => HandlerError::Fenced(error.to_string()),
            other => HandlerError::Transient(other.to_string()),
        }
    }
}

/// Parse an envelope one of our own functions wrote; one that does not
/// parse is rejected (dead-lettered with the reason), never retried.
pub fn parse_internal<T: serde::de::DeserializeOwned>(
    message: &Incoming,
    what: &str,
) -> Result<T, Outcome> {
    serde_json::from_slice(&message.payload).map_err(|error| Outcome::Reject {
        error: im_events::EventError::new(
            ErrorCode::NotCloudevent,
            format!("{what} does not parse: {error}"),
        ),
        identity: Identity::default(),
    })
}

/// Run store work on the blocking pool (SQLite calls block); a store error
/// becomes the handler error it means.
pub async fn blocking<T, F>(work: F) -> Result<T, HandlerError>
where
    F: FnOnce() -> Result<T, im_store::StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| HandlerError::Transient(format!("store task failed: {error}")))?
        .map_err(HandlerError::from)
}

pub trait BatchHandler: Send + Sync + 'static {
    /// Make the batch's effects durable (store commit, downstream publishes
    /// acknowledged) and return one outcome per message, in order.
    fn handle(
        &self,
        claim: &Claim,
        batch: Vec<Incoming>,
    ) -> impl Future<Output = Result<Vec<Outcome>, HandlerError>> + Send;

    /// Work the owner of a partition does besides handling batches (timers,
    /// an outbox), alongside the batch loop while it owns the partition; it
    /// should return once the claim is revoked or at shutdown. None by
    /// default.
    fn owner_task(&self, claim: Claim, shutdown: Shutdown) -> impl Future<Output = ()> + Send {
        let _ = (claim, shutdown);
        async {}
    }
}

fn backoff(attempt: i64, key: &str) -> Duration {
    RetryPolicy::standard().delay(attempt, key)
}

/// The longest wait between retries of a batch the broker did not take.
pub const UNAVAILABLE_CAP: Duration = Duration::from_secs(2);

/// How often and how patiently a failing batch is retried in place.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: i64,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    pub fn standard() -> Self {
        RetryPolicy {
            attempts: topology().consumer_defaults.max_deliver,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }

    /// The wait before retry `attempt` after the broker was unavailable:
    /// capped at [`UNAVAILABLE_CAP`] (or the policy's own cap, if lower),
    /// so that a partition resumes within about that of the broker's
    /// return, not half a minute later.
    pub fn unavailable_delay(&self, attempt: u64, key: &str) -> Duration {
        crate::backoff::Backoff::new(self.base, self.cap.min(UNAVAILABLE_CAP)).delay(attempt, key)
    }

    /// The wait before retry `attempt` of what `key` names (jittered per
    /// key, [`crate::backoff`]).
    pub fn delay(&self, attempt: i64, key: &str) -> Duration {
        crate::backoff::Backoff::new(self.base, self.cap).delay(attempt.max(1) as u64, key)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn headers_of(message: &async_nats::Message) -> Vec<(String, String)> {
    let Some(headers) = &message.headers else {
        return Vec::new();
    };
    headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_string()))
        })
        .collect()
}

/// Run `handler` over one partition's consumer until shutdown or the claim is
/// revoked.
async fn run_partition<H: BatchHandler>(
    js: jetstream::Context,
    def: ConsumerDef,
    claim: Claim,
    handler: Arc<H>,
    shutdown: Shutdown,
) {
    let function = def.function.clone();
    let defaults = &topology().consumer_defaults;
    let mut consumer = loop {
        if !claim.is_valid() {
            return;
        }
        match take_over_consumer(&js, &def, claim.partition, claim.epoch).await {
            Ok(consumer) => break consumer,
            Err(error @ crate::topology::TakeOverError::Superseded(_)) => {
                tracing::warn!(%error, "a newer owner took the partition over");
                claim.revoke();
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "consumer not ready, retrying");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    };
    // One ack covers every message before it: the consumer's own policy
    // decides (a consumer made before `ack_all` was set keeps acking each).
    let ack_all = consumer.cached_info().config.ack_policy == jetstream::consumer::AckPolicy::All;
    // Messages the handler held back (Outcome::Hold), oldest first, with
    // when it first held each.
    let mut held: Vec<(jetstream::Message, Instant)> = Vec::new();
    let mut last_progress = Instant::now();
    let mut last_retry = Instant::now();
    // A continuous pull: one subscription, with pull requests for up to a
    // batch kept outstanding, instead of a fetch per cycle (each fetch makes
    // and removes a subscription on the server, and waits for a request
    // round trip before the next batch).
    let mut incoming: Option<jetstream::consumer::pull::Stream> = None;
    // Every pull starts at the ack floor, so the consumer sequence of the
    // next delivery is known (see [`DeliveryOrder`]): even a delivery made
    // before this loop (to an earlier pull of this consumer) is made again.
    if rewind(&mut consumer, &claim, &mut held).await.is_err() {
        return;
    }
    // Set with each new pull, from the count the last reset reported.
    let mut order = DeliveryOrder::after(0);
    while claim.is_valid() && !shutdown.is_triggered() {
        let stream = match incoming.as_mut() {
            Some(stream) => stream,
            None => match consumer
                .stream()
                .max_messages_per_batch(defaults.fetch_batch)
                .expires(Duration::from_secs(30))
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
            {
                Ok(stream) => {
                    order =
                        DeliveryOrder::after(consumer.cached_info().delivered.consumer_sequence);
                    incoming.insert(stream)
                }
                Err(error) => {
                    tracing::warn!(%error, "pull failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let mut fresh = Vec::new();
        // Wait for the first message a little (held messages come back and
        // the claim is looked at in between), then take what is ready.
        match tokio::time::timeout(HELD_RETRY_EVERY / 2, stream.next()).await {
            Err(_) => {}
            Ok(Some(Ok(message))) => fresh.push(message),
            Ok(next) => {
                incoming = None;
                if let Some(Err(error)) = &next {
                    if error.kind() == jetstream::consumer::pull::MessagesErrorKind::ConsumerDeleted
                    {
                        // Only a newer owner deletes our consumer.
                        tracing::warn!(
                            "our consumer was deleted: a newer owner took the partition over"
                        );
                        claim.revoke();
                        break;
                    }
                    tracing::info!(%error, "pull interrupted; resuming from the ack floor");
                }
                // What the interrupted pull had delivered but we never saw
                // would come back only after ack_wait, behind newer messages
                // (a conversation's events out of order): start again from
                // the ack floor, in order. Held messages come again too.
                if rewind(&mut consumer, &claim, &mut held).await.is_err() {
                    break;
                }
                continue;
            }
        }
        if let Some(stream) = incoming.as_mut() {
            while fresh.len() < defaults.fetch_batch {
                match futures::FutureExt::now_or_never(stream.next()) {
                    Some(Some(Ok(message))) => fresh.push(message),
                    _ => break,
                }
            }
            // A stage off the sender's path (its ack and the fast push come
            // from dedupe's commit) waits a little for more: at a moderate
            // rate a batch is otherwise one message, and every batch costs
            // the same wake-ups, commit and publishes whatever its size.
            // A stage on it waits only when it is behind (`busy_linger`).
            let linger = def.linger_for(fresh.len(), defaults.fetch_batch);
            if !linger.is_zero() {
                let until = tokio::time::Instant::now() + linger;
                while fresh.len() < defaults.fetch_batch {
                    match tokio::time::timeout_at(until, stream.next()).await {
                        Ok(Some(Ok(message))) => fresh.push(message),
                        _ => break,
                    }
                }
            }
        }
        if let Some(expected) = order.gap(&fresh) {
            // A delivery that never reached us (lost in transit when a node
            // or route went away): with `AckPolicy::All` the ack of a later
            // one would cover it, and with per-message acks it would come
            // back only after ack_wait, behind newer messages. Start again
            // from the ack floor, in order.
            tracing::warn!(
                partition = claim.partition,
                expected,
                "a delivery never reached this consumer; starting again from the ack floor"
            );
            metrics::counter!("im_consumer_lost_deliveries_total", "function" => function.clone())
                .increment(1);
            incoming = None;
            if rewind(&mut consumer, &claim, &mut held).await.is_err() {
                break;
            }
            continue;
        }
        match handle_fetched(
            &js,
            &def,
            &claim,
            &handler,
            &shutdown,
            &function,
            fresh,
            &mut held,
            &mut last_progress,
            &mut last_retry,
            ack_all,
        )
        .await
        {
            Next::Continue => {}
            Next::Stop => break,
            Next::Rewind => {
                incoming = None;
                if rewind(&mut consumer, &claim, &mut held).await.is_err() {
                    break;
                }
            }
        }
    }
    // Whoever owns the partition next takes what is still held.
    for (message, _) in &held {
        let _ = message.ack_with(AckKind::Nak(None)).await;
    }
}

/// The consumer sequence the next delivery of a pull must carry. JetStream
/// numbers a consumer's deliveries (redeliveries included) one by one, so a
/// gap means a delivery was made and lost before it reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryOrder {
    next: u64,
}

impl DeliveryOrder {
    /// After `delivered` deliveries (the consumer's own count).
    pub fn after(delivered: u64) -> Self {
        DeliveryOrder {
            next: delivered + 1,
        }
    }

    /// Take `seq` as the next delivery; Err(the one expected) if one or
    /// more before it never came.
    pub fn accept(&mut self, seq: u64) -> Result<(), u64> {
        if seq > self.next {
            return Err(self.next);
        }
        self.next = self.next.max(seq + 1);
        Ok(())
    }

    /// The first missing delivery before `messages`, if any.
    pub fn gap(&mut self, messages: &[jetstream::Message]) -> Option<u64> {
        messages
            .iter()
            .filter_map(|message| message.info().ok().map(|info| info.consumer_sequence))
            .find_map(|seq| self.accept(seq).err())
    }
}

/// Start a partition's consumer again at its ack floor: what came after
/// it is delivered again, in order (held messages too). Retried until it
/// is done: pulling on without it would let a later ack cover what must
/// come again. Err if the consumer is gone (a newer owner took the
/// partition over) or the claim is lost meanwhile.
async fn rewind(
    consumer: &mut jetstream::consumer::PullConsumer,
    claim: &Claim,
    held: &mut Vec<(jetstream::Message, Instant)>,
) -> Result<(), ()> {
    loop {
        match consumer.reset(None).await {
            Ok(_) => {
                held.clear();
                return Ok(());
            }
            Err(error) if error.kind() == jetstream::stream::ConsumerResetErrorKind::NotFound => {
                tracing::warn!("our consumer is gone: a newer owner took the partition over");
                claim.revoke();
                return Err(());
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reset the consumer to its ack floor; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if !claim.is_valid() {
                    return Err(());
                }
            }
        }
    }
}

/// What the loop does after a batch.
#[derive(Debug, PartialEq)]
enum Next {
    Continue,
    /// At shutdown, with the batch left unacknowledged.
    Stop,
    /// Under AckPolicy::All, a message could not be settled (naked to come
    /// again): a later batch's ack would cover it before it came, so the
    /// consumer starts again at its ack floor, where that message is.
    Rewind,
}

/// Handle what one pull cycle got (with the held messages first), settle
/// it, and keep what the handler holds.
#[allow(clippy::too_many_arguments)]
async fn handle_fetched<H: BatchHandler>(
    js: &jetstream::Context,
    def: &ConsumerDef,
    claim: &Claim,
    handler: &Arc<H>,
    shutdown: &Shutdown,
    function: &str,
    fresh: Vec<jetstream::Message>,
    held: &mut Vec<(jetstream::Message, Instant)>,
    last_progress: &mut Instant,
    last_retry: &mut Instant,
    ack_all: bool,
) -> Next {
    if !held.is_empty() && last_progress.elapsed() >= HELD_PROGRESS_EVERY {
        for (message, _) in held.iter() {
            let _ = message.ack_with(AckKind::Progress).await;
        }
        *last_progress = Instant::now();
    }
    if fresh.is_empty() && (held.is_empty() || last_retry.elapsed() < HELD_RETRY_EVERY) {
        return Next::Continue;
    }
    *last_retry = Instant::now();
    let mut messages = Vec::with_capacity(held.len() + fresh.len());
    let mut held_since = Vec::with_capacity(held.len() + fresh.len());
    for (message, since) in held.drain(..) {
        messages.push(message);
        held_since.push(Some(since));
    }
    for message in fresh {
        messages.push(message);
        held_since.push(None);
    }
    let started = Instant::now();
    let incoming: Vec<Incoming> = messages
        .iter()
        .zip(&held_since)
        .map(|(message, since)| {
            let info = message.info().ok();
            Incoming {
                subject: message.subject.to_string(),
                headers: headers_of(message),
                payload: message.payload.clone(),
                stream_seq: info.as_ref().map(|i| i.stream_sequence).unwrap_or(0),
                delivered: info.as_ref().map(|i| i.delivered).unwrap_or(1),
                published_ms: info
                    .as_ref()
                    .map(|i| i.published.timestamp_millis())
                    .unwrap_or(0),
                held_ms: since.map_or(0, |since| since.elapsed().as_millis() as u64),
            }
        })
        .collect();
    if let Some(info) = messages.last().and_then(|m| m.info().ok()) {
        metrics::gauge!(LAG, "function" => function.to_string()).set(info.pending as f64);
    }
    let keep_alive = |index: usize| {
        let message = &messages[index];
        async move {
            let _ = message.ack_with(AckKind::Progress).await;
        }
    };
    let result = handle_in_order(
        handler.as_ref(),
        claim,
        incoming.clone(),
        0,
        &keep_alive,
        RetryPolicy::standard(),
        shutdown,
    )
    .await;
    metrics::histogram!(BATCH_SECONDS, "function" => function.to_string())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(outcomes) => {
            // Under AckPolicy::All one ack covers every message before it:
            // a run of done messages is acknowledged by its last one, at
            // the end or before something else is settled. After a message
            // that could not be settled (its dead letter not stored, so it
            // is naked to come again), nothing later is acknowledged: that
            // ack would cover it.
            let mut covering: Option<jetstream::Message> = None;
            let mut unsettled = false;
            for (((message, incoming), outcome), since) in messages
                .into_iter()
                .zip(&incoming)
                .zip(outcomes)
                .zip(held_since)
            {
                if let Outcome::Hold = outcome {
                    if since.is_none() {
                        // Held back for an earlier event that has not come.
                        metrics::counter!(crate::telemetry::HELD, "function" => function.to_string())
                            .increment(1);
                    }
                    held.push((message, since.unwrap_or_else(Instant::now)));
                    // Later ones are settled on their own; under AckAll
                    // their ack would cover the held one, so they come
                    // again instead.
                    unsettled |= ack_all;
                    continue;
                }
                if unsettled {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    continue;
                }
                if ack_all && matches!(outcome, Outcome::Done) {
                    metrics::counter!(PROCESSED, "function" => function.to_string()).increment(1);
                    covering = Some(message);
                    continue;
                }
                // The done ones before it are acknowledged first: this one
                // may take long (its dead letter retried in place).
                if let Some(last) = covering.take() {
                    let _ = last.ack().await;
                }
                if !settle(js, def, &message, incoming, outcome).await && ack_all {
                    unsettled = true;
                }
            }
            if let Some(last) = covering {
                let _ = last.ack().await;
            }
            if unsettled {
                return Next::Rewind;
            }
        }
        Err(HandlerError::Fenced(reason)) => {
            tracing::warn!(partition = claim.partition, %reason, "partition fenced, giving it up");
            claim.revoke();
            for message in &messages {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        }
        Err(HandlerError::Transient(reason) | HandlerError::Unavailable(reason)) => {
            // Only at shutdown: leave the batch to the next owner, in order.
            tracing::info!(partition = claim.partition, %reason, "batch left unacknowledged at shutdown");
            for message in &messages {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
            return Next::Stop;
        }
    }
    Next::Continue
}

/// How often held messages are marked in progress (well within `ack_wait`).
const HELD_PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How often held messages are handed back when nothing new arrives.
const HELD_RETRY_EVERY: Duration = Duration::from_secs(1);

/// Handle a batch, retrying transient failures in place so that nothing
/// behind it overtakes it: naking and fetching on would reorder a key's
/// events. While retrying, the messages are marked in progress so JetStream
/// does not redeliver them. After `max_deliver` failed attempts the batch is
/// retried one message at a time, and a message that still fails then is
/// dead-lettered (as `Retry` past the limit), so a poison message cannot
/// block its partition forever. A batch the broker did not take
/// ([`HandlerError::Unavailable`]) is retried every [`UNAVAILABLE_CAP`] at
/// most, for as long as the outage lasts, and never dead-lettered for it.
/// Returns `Transient` only at shutdown.
async fn handle_in_order<H, K, F>(
    handler: &H,
    claim: &Claim,
    incoming: Vec<Incoming>,
    offset: usize,
    keep_alive: &K,
    policy: RetryPolicy,
    shutdown: &Shutdown,
) -> Result<Vec<Outcome>, HandlerError>
where
    H: BatchHandler,
    K: Fn(usize) -> F + Sync,
    F: Future<Output = ()> + Send,
{
    let mut last_error = String::new();
    let key = format!("{}:{}", claim.function, claim.partition);
    // Failures count against the attempts; outages of the broker do not.
    let (mut failures, mut outages) = (0i64, 0u64);
    while failures < policy.attempts {
        let delay = match handler.handle(claim, incoming.clone()).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(HandlerError::Fenced(reason)) => return Err(HandlerError::Fenced(reason)),
            Err(HandlerError::Unavailable(reason)) => {
                if !claim.is_valid() {
                    // The lease ran out during the outage: the partition is
                    // someone else's now (a function without a fenced store
                    // would otherwise publish its batch behind their back).
                    return Err(HandlerError::Fenced(format!(
                        "the partition's lease was lost while the broker was unavailable: {reason}"
                    )));
                }
                outages += 1;
                tracing::warn!(partition = claim.partition, outages, %reason, "the broker did not take the batch's output, retrying in place");
                policy.unavailable_delay(outages, &key)
            }
            Err(HandlerError::Transient(reason)) => {
                failures += 1;
                tracing::warn!(partition = claim.partition, attempt = failures, %reason, "batch failed, retrying in place");
                last_error = reason;
                policy.delay(failures, &key)
            }
        };
        metrics::counter!(FAILED, "function" => claim.function.clone())
            .increment(incoming.len() as u64);
        // Mark the messages in progress so JetStream does not redeliver
        // them behind our back while we wait.
        for index in offset..offset + incoming.len() {
            keep_alive(index).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait() => return Err(HandlerError::Transient("shutting down".into())),
        }
    }
    if incoming.len() == 1 {
        return Ok(vec![Outcome::Retry(last_error)]);
    }
    let mut outcomes = Vec::with_capacity(incoming.len());
    for (index, single) in incoming.into_iter().enumerate() {
        let outcome = Box::pin(handle_in_order(
            handler,
            claim,
            vec![single],
            offset + index,
            keep_alive,
            policy,
            shutdown,
        ))
        .await?;
        outcomes.extend(outcome);
    }
    Ok(outcomes)
}

/// Acknowledge, dead-letter or nak one message by its outcome; false if it
/// was naked to come again (its dead letter could not be stored).
async fn settle(
    js: &jetstream::Context,
    def: &ConsumerDef,
    message: &jetstream::Message,
    incoming: &Incoming,
    outcome: Outcome,
) -> bool {
    let function = def.function.clone();
    let max_deliver = topology().consumer_defaults.max_deliver;
    let letter = |code: ErrorCode, reason: String, identity: Identity| DeadLetter {
        function: identity
            .stage
            .map_or_else(|| function.clone(), str::to_string),
        code,
        reason,
        original_subject: incoming.subject.clone(),
        original_headers: incoming.headers.clone(),
        payload: incoming.payload.clone(),
        // The shard it came from, if the stream is sharded.
        stream: message
            .info()
            .map(|info| info.stream.to_string())
            .unwrap_or_else(|_| def.stream.clone()),
        stream_seq: incoming.stream_seq,
        delivered: incoming.delivered,
        source: identity.source,
        event_id: identity.event_id,
        event_type: identity.event_type,
    };
    let (letters, done_ack) = match outcome {
        Outcome::Done => {
            metrics::counter!(PROCESSED, "function" => function.clone()).increment(1);
            let _ = message.ack().await;
            return true;
        }
        Outcome::Hold => {
            // The loop keeps held messages; anywhere else, JetStream does.
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return false;
        }
        Outcome::Retry(reason) => (
            vec![letter(
                ErrorCode::MaxDeliveries,
                format!("gave up after {max_deliver} attempts; last error: {reason}"),
                Identity::default(),
            )],
            AckKind::Term,
        ),
        Outcome::Reject { error, identity } => (
            vec![letter(error.code, error.reason, identity)],
            AckKind::Term,
        ),
        Outcome::Partial(rejections) => {
            metrics::counter!(PROCESSED, "function" => function.clone()).increment(1);
            let letters = rejections
                .into_iter()
                .map(|rejection| DeadLetter {
                    original_subject: rejection.subject,
                    original_headers: Vec::new(),
                    payload: rejection.payload,
                    ..letter(
                        rejection.error.code,
                        rejection.error.reason,
                        rejection.identity,
                    )
                })
                .collect();
            (letters, AckKind::Ack)
        }
    };
    for dead in &letters {
        let mut published = publish_dead_letter(js, dead, now_ms()).await;
        for attempt in 1..max_deliver {
            let Err(error) = &published else { break };
            tracing::warn!(%error, attempt, "dead letter not published, retrying");
            // Marked in progress through the wait, which grows past
            // ack_wait: JetStream would deliver it again meanwhile.
            let until = Instant::now() + backoff(attempt, &dead.original_subject);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                let _ = message.ack_with(AckKind::Progress).await;
                tokio::time::sleep(left.min(HELD_PROGRESS_EVERY)).await;
            }
            published = publish_dead_letter(js, dead, now_ms()).await;
        }
        match published {
            Ok(()) => {
                metrics::counter!(DEAD_LETTERED, "function" => dead.function.clone()).increment(1);
                tracing::info!(code = %dead.code, reason = %dead.reason, subject = %dead.original_subject, "dead-lettered");
            }
            Err(error) => {
                // The dead letter is not durable: keep the message to try
                // again (what it carries is idempotent).
                tracing::warn!(%error, "dead letter not published, will retry");
                let _ = message
                    .ack_with(AckKind::Nak(Some(backoff(
                        incoming.delivered,
                        &incoming.stream_seq.to_string(),
                    ))))
                    .await;
                return false;
            }
        }
    }
    let _ = message.ack_with(done_ack).await;
    true
}

/// Run a function: ensure the topology, then process every partition this
/// replica can own until `shutdown`; drains in-flight batches before it
/// returns.
pub async fn run_function<H: BatchHandler>(
    client: async_nats::Client,
    function: &str,
    instance: String,
    lease_ttl: Duration,
    handler: Arc<H>,
    shutdown: Shutdown,
) -> crate::Result<()> {
    let js = jetstream::new(client);
    ensure_streams(&js).await?;
    let def = topology().consumer(function).cloned().ok_or_else(|| {
        crate::config_error!(
            "no consumer is defined for function {function} in schemas/streams.json"
        )
    })?;
    let partitions = topology().partition_count(&def);
    // An upgraded deployment: the consumers of the earlier release hand
    // their places over, and what its retired input holds is applied
    // first.
    if !def.predecessors.is_empty() {
        let mut attempt = 0;
        while let Err(error) = crate::topology::migrate_predecessors(&js).await {
            attempt += 1;
            tracing::warn!(%error, attempt, "the earlier release's consumers not handed over yet; retrying");
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(backoff(attempt, function)) => {}
            }
        }
    }
    retired::drain_retired(&js, &def, &handler, &instance, lease_ttl, &shutdown).await?;
    tokio::spawn(crate::telemetry::report_streams(
        js.clone(),
        crate::topology::stream_names(&def.stream)
            .into_iter()
            .chain([im_events::subjects::STREAM_DLQ.to_string()])
            .collect(),
        shutdown.clone(),
    ));
    crate::ensure_config!(
        partitions as usize <= crate::publish::MAX_CONCURRENT_PUBLISHERS,
        "{partitions} partitions exceed the {} concurrent publishers one process supports",
        crate::publish::MAX_CONCURRENT_PUBLISHERS
    );
    // An unpartitioned function would have one partition: one active
    // replica at a time holds its lease, so events keep their stream order
    // however many replicas run, and a standby takes over on failure.
    let result = run_partitions(
        &js,
        function,
        instance,
        partitions,
        lease_ttl,
        shutdown.clone(),
        |claim| {
            let batches = run_partition(
                js.clone(),
                def.clone(),
                claim.clone(),
                handler.clone(),
                shutdown.clone(),
            );
            let (handler, shutdown) = (handler.clone(), shutdown.clone());
            async move {
                futures::join!(batches, handler.owner_task(claim, shutdown));
            }
        },
    )
    .await;
    // The last batches' spans.
    crate::trace::flush();
    result
}

pub mod retired;

#[cfg(test)]
mod tests;
