//! `push`: online devices get what unread committed, within milliseconds.
//!
//! unread announces every sync item it committed on the core subject
//! `im.push.<user partition>`; push owns user partitions (the same leases as
//! every partitioned function), keeps a live view of presence from the KV
//! bucket `IM_PRESENCE` (which device is on which gateway), turns items into
//! WebSocket frames and publishes them on `im.gw.<gateway>.user.<user>` for
//! each gateway holding a device of the user. Nothing here is durable and
//! nothing needs to be: a device
//! that misses a push sees a gap in `sync_seq`, or reconnects, and syncs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use im_events::subjects::push_subject;
use im_events::{PushNotice, SyncItem};
use im_runtime::lease::{run_partitions, Claim};
use im_runtime::presence::Online;
use im_runtime::publish::FramesOut;
use im_runtime::Shutdown;
use im_store::{unread_state, ConversationStore, UserStore};

pub const FUNCTION: &str = "push";

pub struct Push {
    pub client: async_nats::Client,
    pub conversations: Arc<dyn ConversationStore>,
    pub users: Arc<dyn UserStore>,
    pub online: Online,
}

impl Push {
    /// Push one batch of notices from unread (or dedupe's fast path) for
    /// user partition `partition`.
    pub async fn deliver(&self, partition: u32, notices: &[PushNotice]) {
        let now = chrono::Utc::now().timestamp_millis();
        let mut counts_needed: Vec<(String, String)> = Vec::new();
        let mut counted: Vec<(&str, &str, &im_events::UnreadCounts)> = Vec::new();
        // Every frame of the batch, sent once per gateway at the end.
        let mut out = FramesOut::default();
        // Until the batch is pushed.
        let mut spans = im_runtime::trace::Spans::default();
        for notice in notices {
            let user = notice.user_id.as_str();
            if !self.online.any(user, now) {
                continue;
            }
            let sync_seq = notice.sync_seq;
            let frame: bytes::Bytes = notice.item.frame(sync_seq).to_string().into();
            let trace = match &notice.trace {
                Some(parent) if im_runtime::trace::enabled() => spans.event(
                    FUNCTION,
                    Some(parent),
                    Some(partition),
                    sync_seq,
                    notices.len(),
                ),
                _ => None,
            };
            self.online
                .add_frame(&mut out, user, now, &frame, trace.as_ref());
            im_runtime::telemetry::record_pushed(&notice.item, sync_seq.is_some(), now);
            // Unread counts follow the durable notice (the fast one comes
            // before unread has counted the message): as unread counted
            // them, or, from an unread that did not, as read here.
            if notice.counted {
                if let Some(counts) = &notice.unread {
                    counted.push((user, notice.item.conversation_id(), counts));
                }
            } else if sync_seq.is_some()
                && matches!(notice.item, SyncItem::Message(_) | SyncItem::Read(_))
            {
                let key = (user.to_string(), notice.item.conversation_id().to_string());
                if !counts_needed.contains(&key) {
                    counts_needed.push(key);
                }
            }
        }
        // Unread counts changed: push them too, once per (user, conversation).
        for (user, conversation_id, counts) in counted {
            let frame: bytes::Bytes = counts.frame(conversation_id).to_string().into();
            self.online.add_frame(&mut out, user, now, &frame, None);
        }
        for (user, conversation_id) in counts_needed {
            let (users, conversations, who) =
                (self.users.clone(), self.conversations.clone(), user.clone());
            let conversation = conversation_id.clone();
            let state = tokio::task::spawn_blocking(move || {
                unread_state(users.as_ref(), conversations.as_ref(), &who, &conversation)
            })
            .await;
            let Ok(Ok(state)) = state else { continue };
            let frame: bytes::Bytes = state.frame(&conversation_id).to_string().into();
            self.online.add_frame(&mut out, &user, now, &frame, None);
        }
        out.publish(&self.client).await;
    }

    /// A message in a read-diffusion group: its online members get the
    /// frame (without a sync_seq: such conversations are read by history).
    pub async fn deliver_group(&self, message: &im_events::CommittedMessage) {
        let (store, conversation) = (self.conversations.clone(), message.conversation_id.clone());
        let Ok(Ok(members)) =
            tokio::task::spawn_blocking(move || store.current_members(&conversation)).await
        else {
            return;
        };
        let now = chrono::Utc::now().timestamp_millis();
        let payload: bytes::Bytes = SyncItem::from(message.clone())
            .frame(None)
            .to_string()
            .into();
        let mut out = FramesOut::default();
        for member in members {
            if self
                .online
                .add_frame(&mut out, &member, now, &payload, None)
            {
                metrics::counter!(im_runtime::telemetry::PUSHED).increment(1);
            }
        }
        out.publish(&self.client).await;
    }

    async fn run_groups(self: Arc<Self>, shutdown: Shutdown) {
        // A queue group: each large-group message is handled by one replica.
        let Ok(mut subscription) = self
            .client
            .queue_subscribe(im_events::subjects::GROUP_PUSH_SUBJECT, "im-push".into())
            .await
        else {
            tracing::warn!("cannot subscribe to large-group pushes");
            return;
        };
        loop {
            let next = tokio::select! {
                next = subscription.next() => next,
                _ = shutdown.wait() => break,
            };
            let Some(message) = next else { break };
            match serde_json::from_slice::<im_events::CommittedMessage>(&message.payload) {
                Ok(committed) => self.deliver_group(&committed).await,
                Err(error) => {
                    metrics::counter!("im_push_unreadable_notices_total").increment(1);
                    tracing::warn!(%error, "large-group push unreadable; skipped");
                }
            }
        }
    }

    async fn run_partition(self: Arc<Self>, claim: Claim, shutdown: Shutdown) {
        let Ok(mut subscription) = self.client.subscribe(push_subject(claim.partition)).await
        else {
            tracing::warn!(
                partition = claim.partition,
                "cannot subscribe; giving the partition up"
            );
            claim.revoke();
            return;
        };
        while claim.is_valid() && !shutdown.is_triggered() {
            let next = tokio::select! {
                next = subscription.next() => next,
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
            };
            let Some(message) = next else { break };
            match serde_json::from_slice::<Vec<PushNotice>>(&message.payload) {
                Ok(notices) => self.deliver(claim.partition, &notices).await,
                Err(error) => {
                    // Only unread and dedupe may publish here; a payload
                    // they did not write is counted and said, not guessed at.
                    metrics::counter!("im_push_unreadable_notices_total").increment(1);
                    tracing::warn!(partition = claim.partition, %error, "push notices unreadable; skipped");
                }
            }
        }
    }
}

pub async fn run(
    client: async_nats::Client,
    conversations: Arc<dyn ConversationStore>,
    users: Arc<dyn UserStore>,
    presence_ttl: Duration,
    instance: String,
    lease_ttl: Duration,
    shutdown: Shutdown,
) -> im_runtime::Result<()> {
    let js = jetstream::new(client.clone());
    im_runtime::topology::ensure_streams(&js).await?;
    let presence = im_runtime::presence::follow(&js, presence_ttl).await?;
    let push = Arc::new(Push {
        client,
        conversations,
        users,
        online: Online {
            view: presence,
            ttl: presence_ttl,
        },
    });
    let groups = tokio::spawn(push.clone().run_groups(shutdown.clone()));
    let partitions = im_runtime::topology::topology().partitions.user;
    run_partitions(
        &js,
        FUNCTION,
        instance,
        partitions,
        lease_ttl,
        shutdown.clone(),
        |claim| push.clone().run_partition(claim, shutdown.clone()),
    )
    .await?;
    let _ = groups.await;
    im_runtime::trace::flush();
    Ok(())
}
