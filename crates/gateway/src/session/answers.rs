//! What frames are answered from: membership and presence checks, receipts,
//! delivery reports, background submits, read results.

use super::*;

pub(super) async fn conversation_exists(
    gateway: &Arc<Gateway>,
    conversation_id: &str,
) -> Result<bool, FrameError> {
    let (store, id) = (gateway.conversations.clone(), conversation_id.to_string());
    Ok(tokio::task::spawn_blocking(move || store.conversation(&id))
        .await
        .map_err(store_error)?
        .map_err(store_error)?
        .is_some())
}

/// The `receipts_result` of a conversation (pure): every member's marks in
/// write diffusion (a read counts as delivered too); in large groups only
/// how many members have read and received up to the last seq.
pub fn receipts_frame(
    record: &im_store::ConversationRecord,
    members: Vec<String>,
    receipts: Vec<im_store::Receipt>,
) -> Value {
    let marks: std::collections::HashMap<&str, (u64, u64)> = receipts
        .iter()
        .map(|r| {
            (
                r.user_id.as_str(),
                (r.read_seq, r.delivered_seq.max(r.read_seq)),
            )
        })
        .collect();
    if record.diffusion == im_events::Diffusion::Read {
        let last = record.last_seq;
        let read = marks.values().filter(|(r, _)| *r >= last).count();
        let delivered = marks.values().filter(|(_, d)| *d >= last).count();
        return json!({"op": "receipts_result", "conversation_id": record.conversation_id,
                      "members": [], "counts": {"members": record.member_count, "at_seq": last,
                                                "read": read, "delivered": delivered}});
    }
    let members: Vec<Value> = members
        .iter()
        .map(|user| {
            let (read, delivered) = marks.get(user.as_str()).copied().unwrap_or_default();
            json!({"user_id": user, "read_seq": read, "delivered_seq": delivered})
        })
        .collect();
    json!({"op": "receipts_result", "conversation_id": record.conversation_id, "members": members})
}

/// Presence only of users who share a conversation with the requester
/// (themselves included); asking about anyone else is refused whole, and
/// the refusal is the same whether that user exists or not.
pub(super) async fn require_shared(
    gateway: &Arc<Gateway>,
    user: &str,
    others: &[String],
) -> Result<(), FrameError> {
    let (store, conversations, me, others) = (
        gateway.users.clone(),
        gateway.conversations.clone(),
        user.to_string(),
        others.to_vec(),
    );
    let strangers = tokio::task::spawn_blocking(move || {
        let mine: std::collections::HashSet<String> = store
            .user_conversations(&me)?
            .into_iter()
            .map(|row| row.conversation_id)
            .collect();
        let mut strangers = Vec::new();
        for other in others.iter().filter(|o| **o != me) {
            // The users' lists are unread's projection and lag the commit;
            // a direct conversation is known once its first message is
            // committed (its ack), so a reply to "sent" never reads as
            // "you share nothing".
            let direct = im_events::ids::direct_conversation_id(&me, other);
            let shared = mine.contains(&direct)
                || conversations.conversation(&direct)?.is_some()
                || store
                    .user_conversations(other)?
                    .iter()
                    .any(|row| mine.contains(&row.conversation_id));
            if !shared {
                strangers.push(other.clone());
            }
        }
        Ok::<_, im_store::StoreError>(strangers)
    })
    .await
    .map_err(store_error)?
    .map_err(store_error)?;
    if strangers.is_empty() {
        Ok(())
    } else {
        Err(FrameError::new(
            "forbidden",
            format!(
                "presence only of users you share a conversation with; not of {}",
                strangers.join(", ")
            ),
        ))
    }
}

/// Most sync items one `delivered` frame turns into receipts.
pub(super) const DELIVERY_SCAN: u64 = 1000;

/// A device's delivered cursor moved from `from` to `to` (sync_seqs): the
/// messages of others in that part of its log become `im.message.delivered`
/// events, one per conversation with the highest seq, so their senders get
/// receipts. Refusals (a conversation left meanwhile) are only logged.
pub(super) async fn report_delivery(
    gateway: &Arc<Gateway>,
    context: &Arc<Context>,
    from: u64,
    to: u64,
) {
    let (store, user) = (gateway.users.clone(), context.user.clone());
    let after = from.max(to.saturating_sub(DELIVERY_SCAN));
    let items =
        tokio::task::spawn_blocking(move || store.sync_items(&user, after, (to - after) as usize))
            .await;
    let Ok(Ok(items)) = items else { return };
    let mut highest: std::collections::BTreeMap<String, u64> = Default::default();
    for record in items.iter().filter(|r| r.sync_seq <= to) {
        let Some(message) = record.item.message() else {
            continue;
        };
        if message.sender_id != context.user {
            let entry = highest.entry(message.conversation_id.clone()).or_default();
            *entry = (*entry).max(message.seq);
        }
    }
    for (conversation_id, seq) in highest {
        let data = json!({"conversation_id": conversation_id, "user_id": context.user, "seq": seq});
        let id = uuid::Uuid::new_v4().to_string();
        match gateway
            .begin("im.message.delivered", &context.source, &id, data)
            .await
        {
            Ok(pending) => {
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    if let Err(Refusal { code, reason }) = pending.finish(&gateway).await {
                        tracing::debug!(%code, %reason, "delivery receipt not applied");
                    }
                });
            }
            Err(Refusal { code, reason }) => {
                tracing::debug!(%code, %reason, "delivery receipt not published")
            }
        }
    }
}

pub(super) fn registration_error(error: crate::push_tokens::RegistrationError) -> FrameError {
    match error {
        crate::push_tokens::RegistrationError::Invalid(message) => {
            FrameError::new("bad_frame", message)
        }
        crate::push_tokens::RegistrationError::Limit(message) => {
            FrameError::new("limit_reached", message)
        }
        crate::push_tokens::RegistrationError::Unavailable(message) => {
            FrameError::new("unavailable", message)
        }
    }
}

pub(super) async fn submit_in_background(
    gateway: &Arc<Gateway>,
    context: &Arc<Context>,
    event_type: &'static str,
    data: Value,
) {
    submit_then(gateway, context, event_type, data, |_, _| async { None }).await
}

/// Publish an event for this device and, in the background, wait for the
/// pipeline's verdict: a refusal becomes an `error` frame; once accepted,
/// `answer` may say what to send back.
pub(super) async fn submit_then<F, A>(
    gateway: &Arc<Gateway>,
    context: &Arc<Context>,
    event_type: &'static str,
    data: Value,
    answer: F,
) where
    F: FnOnce(Arc<Gateway>, Arc<Context>) -> A + Send + 'static,
    A: std::future::Future<Output = Option<Value>> + Send,
{
    let id = uuid::Uuid::new_v4().to_string();
    let pending = gateway.begin(event_type, &context.source, &id, data).await;
    let (gateway, context) = (gateway.clone(), context.clone());
    tokio::spawn(async move {
        let verdict = match pending {
            Ok(pending) => pending.finish(&gateway).await,
            Err(error) => Err(error),
        };
        let frame = match verdict {
            Ok(_) => answer(gateway, context.clone()).await,
            Err(error) => Some(pipeline_error(error, None)),
        };
        if let Some(frame) = frame {
            context.send(frame).await;
        }
    });
}

/// Whether the stored row shows a read mark of `seq`: the mark is at
/// least `seq`, or at the conversation's end if `seq` was beyond it (the
/// unread function clamps it there).
pub fn read_applied(row: &im_store::UserConversation, seq: u64) -> bool {
    match row.diffusion {
        im_events::Diffusion::Write => row.read_seq >= seq.min(row.last_seq),
        // Large groups: dedupe checked the mark against the conversation.
        im_events::Diffusion::Read => row.read_seq >= seq,
    }
}

/// The user's row of a conversation once `applied` holds for it (the
/// unread function applies what dedupe accepted a moment later), or as it
/// is when the ack timeout passes first; None without a row.
pub async fn stored_row_once(
    gateway: &Arc<Gateway>,
    user: &str,
    conversation_id: &str,
    applied: impl Fn(&im_store::UserConversation) -> bool,
) -> Option<im_store::UserConversation> {
    let deadline = tokio::time::Instant::now() + gateway.config.ack_timeout;
    let mut wait = Duration::from_millis(2);
    loop {
        let (users, who, conversation) = (
            gateway.users.clone(),
            user.to_string(),
            conversation_id.to_string(),
        );
        let row = tokio::task::spawn_blocking(move || users.user_conversation(&who, &conversation))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let done = row.as_ref().is_none_or(&applied);
        if done || tokio::time::Instant::now() >= deadline {
            if !done {
                tracing::warn!(
                    user,
                    conversation_id,
                    "change not applied within the ack timeout; answering with the stored state"
                );
            }
            return row;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

/// The unread frame after a read mark was accepted, from the stored state
/// once the unread function has applied the mark (dedupe's verdict comes
/// first): a `conversations` request sent after it then returns the same
/// counts, and the device never sees its own read undone. If the mark does
/// not show within the ack timeout, the stored state as it is.
pub async fn unread_after_read(
    gateway: &Arc<Gateway>,
    user: &str,
    conversation_id: &str,
    seq: u64,
) -> Value {
    stored_row_once(gateway, user, conversation_id, |row| read_applied(row, seq)).await;
    let (users, conversations, who) = (
        gateway.users.clone(),
        gateway.conversations.clone(),
        user.to_string(),
    );
    let conversation = conversation_id.to_string();
    let state = tokio::task::spawn_blocking(move || {
        im_store::unread_state(users.as_ref(), conversations.as_ref(), &who, &conversation)
    })
    .await
    .ok()
    .and_then(Result::ok);
    let Some(state) = state else {
        return json!({"op": "error", "code": "unavailable", "message": "unread counts not readable; send conversations"});
    };
    // `as_of`: a pushed unread frame computed before this read (push lags)
    // has a lower one, and the device keeps the higher.
    state.frame(conversation_id)
}
