//! The shell: the batch handler over JetStream and run(), wiring NATS and
//! the stores to the pure core. The `shell` feature (the binary needs it).

use super::*;

pub struct Dedupe {
    pub js: async_nats::jetstream::Context,
    pub store: Arc<dyn ConversationStore>,
    pub config: Config,
    pub conversation_partitions: u32,
    pub user_partitions: u32,
    /// Push committed messages to online members straight from the commit
    /// (see [`fast_notices`]).
    pub fast_path: bool,
    /// Where online devices are: with it, the fast path's frames go from
    /// here straight to the gateways holding the members' devices, one hop
    /// fewer than through push; without it (tests), as notices to push.
    pub online: Option<im_runtime::presence::Online>,
}

impl Dedupe {
    /// The fast path's pushes: frames to the gateways of the members'
    /// online devices, or notices to push when this process does not
    /// follow presence.
    async fn push_fast(&self, notices: Vec<(u32, Vec<PushNotice>)>) {
        let client = self.js.client();
        let Some(online) = &self.online else {
            for (partition, notices) in notices {
                im_runtime::publish::publish_json(&client, push_subject(partition), &notices).await;
            }
            return;
        };
        let now = chrono::Utc::now().timestamp_millis();
        let mut out = im_runtime::publish::FramesOut::default();
        // The same item for many members: its frame is made once.
        let mut frame: Option<(&SyncItem, bytes::Bytes)> = None;
        for notice in notices.iter().flat_map(|(_, notices)| notices) {
            if !online.any(&notice.user_id, now) {
                continue;
            }
            let payload = match &frame {
                Some((item, payload)) if **item == notice.item => payload.clone(),
                _ => {
                    let payload: bytes::Bytes = notice.item.frame(None).to_string().into();
                    frame = Some((&notice.item, payload.clone()));
                    payload
                }
            };
            online.add_frame(
                &mut out,
                &notice.user_id,
                now,
                &payload,
                notice.trace.as_ref(),
            );
            im_runtime::telemetry::record_pushed(&notice.item, false, now);
        }
        out.publish(&client).await;
    }
}

/// The waiting publishers' verdicts.
async fn answer(client: &async_nats::Client, answers: &[(String, Verdict)]) {
    for (subject, verdict) in answers {
        reply(client, subject, verdict).await;
    }
}

impl BatchHandler for Dedupe {
    async fn handle(
        &self,
        claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let store = self.store.clone();
        let config = self.config.clone();
        let fence = claim.fence();
        let fast_path = self.fast_path;
        let (decision, committed) = im_runtime::blocking(move || {
            let decision = decide_batch(store.as_ref(), &config, &batch)?;
            if !decision.effects.is_empty() {
                store.apply(&fence, &decision.effects)?;
            }
            let mut committed = Vec::new();
            if fast_path {
                for (output, _) in &decision.outputs {
                    if let TimelineEvent::Committed(message) = output {
                        if message.diffusion == Diffusion::Write {
                            committed.push((message.clone(), members_of(store.as_ref(), message)?));
                        }
                    }
                }
            }
            Ok::<_, im_store::StoreError>((decision, committed))
        })
        .await?;
        let batch_size = decision.outcomes.len();
        let BatchDecision {
            mut outputs,
            outcomes,
            answers,
            ..
        } = decision;
        // Until the batch is published.
        let spans = trace_outputs(&mut outputs, claim.partition, batch_size);
        // Committed: the waiting publishers get their verdicts and online
        // devices the messages, while the timeline goes on to fanout and
        // unread. Where the commit is not durable yet (`strict`: its fsync
        // is the sync below, shared by the batches that ask at once), the
        // devices get the messages first and the rest only after the sync.
        // A device may so see a message whose commit an OS crash then
        // loses: its input was not acked, comes again, and commits the same
        // seq (the partition's events in the same order on the same state).
        let deferred = self.store.sync_deferred();
        let client = self.js.client();
        if !deferred {
            answer(&client, &answers).await;
        }
        let receipts = receipt_items(&outputs);
        let traces: std::collections::HashMap<String, im_events::Trace> = outputs
            .iter()
            .filter_map(|(event, stamp)| match (event, &stamp.trace) {
                (TimelineEvent::Committed(message), Some(trace)) => {
                    Some((message.message_id.clone(), trace.clone()))
                }
                _ => None,
            })
            .collect();
        self.push_fast(fast_notices(
            &committed,
            &receipts,
            &traces,
            self.user_partitions,
        ))
        .await;
        if deferred {
            let store = self.store.clone();
            im_runtime::blocking(move || store.sync()).await?;
            answer(&client, &answers).await;
        }
        let events: Vec<(u32, Timeline)> = outputs
            .into_iter()
            .map(|(event, stamp)| timeline_event(event, stamp, self.conversation_partitions))
            .collect();
        let outgoing =
            timeline_envelopes(&events).map_err(|e| HandlerError::Transient(e.to_string()))?;
        publish_all(&self.js, outgoing)
            .await
            .map_err(HandlerError::from)?;
        // The public feed, one CloudEvent each (core NATS: live subscribers).
        for (_, event) in &events {
            let subject = events_subject(event.payload.type_name());
            im_runtime::publish::publish_json(&client, subject, event).await;
        }
        drop(spans);
        Ok(outcomes)
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: async_nats::Client,
    store: Arc<dyn ConversationStore>,
    config: Config,
    instance: String,
    lease_ttl: std::time::Duration,
    presence_ttl: std::time::Duration,
    shutdown: im_runtime::Shutdown,
) -> im_runtime::Result<()> {
    let topology = im_runtime::topology::topology();
    let js = async_nats::jetstream::new(client.clone());
    // The presence bucket must exist to be followed.
    im_runtime::topology::ensure_streams(&js).await?;
    let presence = im_runtime::presence::follow(&js, presence_ttl).await?;
    let handler = Arc::new(Dedupe {
        js,
        store,
        config,
        conversation_partitions: topology.partitions.conversation,
        user_partitions: topology.partitions.user,
        fast_path: true,
        online: Some(im_runtime::presence::Online {
            view: presence,
            ttl: presence_ttl,
        }),
    });
    im_runtime::run_function(client, FUNCTION, instance, lease_ttl, handler, shutdown).await
}
/// Who gets a committed message now (for the fast path): the members as of
/// its seq; a direct conversation's two users without a read.
pub(super) fn members_of(
    store: &dyn ConversationStore,
    message: &CommittedMessage,
) -> Result<Vec<String>, im_store::StoreError> {
    if let Some((a, b)) = im_events::ids::direct_members(&message.conversation_id) {
        return Ok(vec![a.to_string(), b.to_string()]);
    }
    store.members_at(&message.conversation_id, message.seq)
}

/// The spans of a batch at dedupe, one per event that caused outputs
/// (consecutive outputs of one event share it); its outputs carry the
/// span's trace on.
pub(super) fn trace_outputs(
    outputs: &mut [(TimelineEvent, Stamp)],
    partition: u32,
    batch: usize,
) -> im_runtime::trace::Spans {
    let mut spans = im_runtime::trace::Spans::default();
    if !im_runtime::trace::enabled() {
        return spans;
    }
    let mut last: Option<(im_events::Trace, Option<im_events::Trace>)> = None;
    for (event, stamp) in outputs.iter_mut() {
        let Some(parent) = stamp.trace.take() else {
            continue;
        };
        let child = match &last {
            Some((previous, child)) if *previous == parent => child.clone(),
            _ => {
                let seq = match event {
                    TimelineEvent::Committed(message) => Some(message.seq),
                    _ => None,
                };
                let child = spans.event(FUNCTION, Some(&parent), Some(partition), seq, batch);
                last = Some((parent, child.clone()));
                child
            }
        };
        stamp.trace = child;
    }
    spans
}
