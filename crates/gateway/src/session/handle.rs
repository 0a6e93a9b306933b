//! One client frame → its effects and answers.

use super::*;

pub(super) async fn handle(
    gateway: &Arc<Gateway>,
    context: &Arc<Context>,
    frame: ClientFrame,
) -> Result<(), FrameError> {
    if frame.is_write() {
        if let Err(wait) = gateway.check_write(&context.user) {
            return Err(FrameError {
                code: "rate_limited",
                message: rate_limited(gateway.config.messages_per_second, wait),
                client_msg_id: frame.client_msg_id().map(str::to_string),
            });
        }
    }
    let frame_kind = match &frame {
        ClientFrame::Unreact { .. } => FrameKind::Unreact,
        ClientFrame::Block { .. } => FrameKind::Block,
        _ => FrameKind::Other,
    };
    match frame {
        ClientFrame::Ping {} => context.send(json!({"op": "pong"})).await,
        ClientFrame::Auth { token } => {
            // The same user and device, and a user token: a session never
            // changes whose it is.
            let claims = gateway
                .verifier
                .verify(&token)
                .await
                .map_err(|error| FrameError::new(error.code(), error.to_string()))?;
            if claims.svc || claims.sub != context.user || claims.dev != context.device {
                return Err(FrameError::new(
                    "forbidden",
                    format!(
                        "the token is not for {} on {}; a session keeps its user and device",
                        context.user, context.device
                    ),
                ));
            }
            context.expires_at.store(claims.exp, Ordering::Release);
            context
                .send(json!({"op": "authenticated", "exp": claims.exp}))
                .await
        }
        ClientFrame::Send {
            conversation_id,
            client_msg_id,
            kind,
            body,
            mentions,
            reply_to,
        } => {
            let mut data = json!({"conversation_id": conversation_id, "sender_id": context.user, "kind": kind, "body": body, "mentions": mentions});
            if let Some(reply_to) = reply_to {
                data["reply_to"] = json!(reply_to);
            }
            // Published in frame order; the verdicts are awaited concurrently.
            context.in_flight.fetch_add(1, Ordering::AcqRel);
            let received = std::time::Instant::now();
            let pending = match gateway
                .begin("im.message.send", &context.source, &client_msg_id, data)
                .await
            {
                Ok(pending) => pending,
                Err(error) => {
                    context
                        .send(pipeline_error(error, Some(&client_msg_id)))
                        .await;
                    context.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Ok(());
                }
            };
            let (gateway, context) = (gateway.clone(), context.clone());
            tokio::spawn(async move {
                let frame = match pending.finish(&gateway).await {
                    Ok(im_events::Verdict {
                        message: Some(message),
                        ..
                    }) => {
                        metrics::histogram!("im_gateway_send_ack_seconds")
                            .record(received.elapsed().as_secs_f64());
                        json!({"op": "ack", "client_msg_id": client_msg_id, "message_id": message.message_id,
                               "conversation_id": message.conversation_id, "seq": message.seq})
                    }
                    Ok(_) => pipeline_error(
                        Refusal::new(
                            "internal",
                            "the pipeline applied the send but named no message; resend with the same id",
                        ),
                        Some(&client_msg_id),
                    ),
                    Err(error) => pipeline_error(error, Some(&client_msg_id)),
                };
                context.send(frame).await;
                context.in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        }
        ClientFrame::Sync { after, limit } => {
            let limit = limit.unwrap_or(100).clamp(1, 1000);
            // Large groups deliver no copies: have them copied into this
            // user's log first, so sync works the same for every conversation.
            let (store, user) = (gateway.users.clone(), context.user.clone());
            let in_large_groups =
                tokio::task::spawn_blocking(move || store.user_conversations(&user))
                    .await
                    .map_err(store_error)?
                    .map_err(store_error)?
                    .iter()
                    .any(|row| row.diffusion == im_events::Diffusion::Read);
            if in_large_groups {
                if let Err(Refusal { code, reason }) = gateway.materialize(&context.user).await {
                    tracing::warn!(%code, %reason, "large-group messages not copied before sync");
                }
            }
            let store = gateway.users.clone();
            let user = context.user.clone();
            let (floor, mut records) = tokio::task::spawn_blocking(move || {
                let floor = store.sync_floor(&user)?;
                if after < floor {
                    return Ok((floor, Vec::new()));
                }
                store
                    .sync_items(&user, after, limit + 1)
                    .map(|items| (floor, items))
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)?;
            if after < floor {
                // The log before `floor` was compacted: this device missed
                // items it can no longer get from it.
                context
                    .send(json!({"op": "sync_result", "items": [], "next": floor, "has_more": true,
                                 "resync": true,
                                 "message": format!("the sync log before {} was compacted: read `conversations` and each conversation's `history` for what changed, then sync from next", floor + 1)}))
                    .await;
                return Ok(());
            }
            let has_more = records.len() > limit;
            records.truncate(limit);
            // Each item written once, as text; the reply is spliced from them.
            let items: Vec<(u64, String)> = records
                .iter()
                .map(|record| (record.sync_seq, record.item.logged(record.sync_seq)))
                .collect();
            let text = sync_reply(items, after, has_more, gateway.config.max_reply_bytes);
            let _ = context.outbox.push_text(text);
        }
        ClientFrame::History {
            conversation_id,
            before_seq,
            limit,
        } => {
            let store = gateway.conversations.clone();
            let limit = limit.unwrap_or(50).clamp(1, 500);
            let (conversation, user) = (conversation_id.clone(), context.user.clone());
            let messages = tokio::task::spawn_blocking(move || {
                readable_history(
                    store.as_ref(),
                    Reader::User(&user),
                    &conversation,
                    before_seq,
                    limit,
                )
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)?;
            let messages = match messages {
                Some(messages) => messages,
                // A direct conversation exists from its first message: one
                // of the user's own that has none yet is simply empty.
                None if im_events::ids::direct_members(&conversation_id)
                    .is_some_and(|(a, b)| a == context.user || b == context.user)
                    && !conversation_exists(gateway, &conversation_id).await? =>
                {
                    Vec::new()
                }
                None => return Err(not_member(&context.user, &conversation_id)),
            };
            // Ascending: keep the newest that fit; `truncated` tells the
            // client to page on from the oldest it got.
            let mut text = json!({"op": "history_result", "conversation_id": conversation_id, "messages": messages}).to_string();
            if text.len() > gateway.config.max_reply_bytes {
                let messages: Vec<Value> = messages.iter().map(|m| json!(m)).collect();
                let fits = fitting(
                    messages.iter().rev().map(|m| m.to_string().len()),
                    gateway.config.max_reply_bytes,
                );
                let kept = &messages[messages.len() - fits..];
                let mut frame = json!({"op": "history_result", "conversation_id": conversation_id, "messages": kept});
                if fits < messages.len() {
                    frame["truncated"] = json!(true);
                }
                text = frame.to_string();
            }
            let _ = context.outbox.push_text(text);
        }
        ClientFrame::Conversations {} => {
            let (users, conversations, user) = (
                gateway.users.clone(),
                gateway.conversations.clone(),
                context.user.clone(),
            );
            let summary = tokio::task::spawn_blocking(move || {
                unread_summary(users.as_ref(), conversations.as_ref(), &user)
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)?;
            let items: Vec<Value> = summary
                .items
                .iter()
                .map(|row| {
                    json!({"conversation_id": row.conversation_id, "last_seq": row.last_seq, "read_seq": row.read_seq,
                           "unread": row.unread(), "muted_until": row.muted_until_ms.map(im_events::rfc3339_ms),
                           "last_message": row.last_message})
                })
                .collect();
            context.send(json!({"op": "conversations_result", "items": items, "total_unread": summary.total_unread})).await;
        }
        ClientFrame::Read {
            conversation_id,
            seq,
        } => {
            let data =
                json!({"conversation_id": conversation_id, "user_id": context.user, "seq": seq});
            submit_then(
                gateway,
                context,
                "im.message.read",
                data,
                move |gateway, context| async move {
                    Some(unread_after_read(&gateway, &context.user, &conversation_id, seq).await)
                },
            )
            .await;
        }
        ClientFrame::Mute {
            conversation_id,
            until,
        } => {
            let data = json!({"user_id": context.user, "conversation_id": conversation_id, "until": until});
            submit_then(gateway, context, "im.user.mute", data, move |gateway, context| async move {
                // Answered once the list shows it, like a read.
                let wanted = until.as_deref().and_then(im_events::parse_rfc3339_ms);
                let row = stored_row_once(&gateway, &context.user, &conversation_id, |row| {
                    row.muted_until_ms == wanted
                })
                .await;
                Some(json!({"op": "muted", "conversation_id": conversation_id,
                            "until": row.and_then(|row| row.muted_until_ms).map(im_events::rfc3339_ms)}))
            })
            .await;
        }
        ClientFrame::Edit {
            conversation_id,
            seq,
            body,
        } => {
            let data = json!({"conversation_id": conversation_id, "seq": seq, "editor_id": context.user, "body": body});
            submit_in_background(gateway, context, "im.message.edit", data).await;
        }
        ClientFrame::Recall {
            conversation_id,
            seq,
        } => {
            let data =
                json!({"conversation_id": conversation_id, "seq": seq, "actor_id": context.user});
            submit_in_background(gateway, context, "im.message.recall", data).await;
        }
        ClientFrame::Typing { conversation_id } => {
            require_member(gateway, &conversation_id, &context.user).await?;
            let store = gateway.conversations.clone();
            let conversation = conversation_id.clone();
            // Large groups (read diffusion) get no typing at all: one frame
            // would reach every gateway for thousands of members.
            let members =
                tokio::task::spawn_blocking(move || match store.conversation(&conversation)? {
                    Some(record) if record.diffusion == im_events::Diffusion::Write => {
                        store.current_members(&conversation)
                    }
                    _ => Ok(Vec::new()),
                })
                .await
                .map_err(store_error)?
                .map_err(store_error)?;
            // Ephemeral: core NATS only, never stored.
            let frame = json!({"op": "typing", "conversation_id": conversation_id, "user_id": context.user});
            let others: Vec<String> = members.into_iter().filter(|m| *m != context.user).collect();
            gateway.broadcast(&others, &frame).await;
        }
        ClientFrame::RegisterPush { provider, token } => {
            match gateway
                .register_push(&context.user, &context.device, &provider, &token)
                .await
            {
                Ok(registered) => {
                    let mut frame = registered;
                    frame["op"] = json!("push_registered");
                    context.send(frame).await;
                }
                Err(error) => return Err(registration_error(error)),
            }
        }
        ClientFrame::UnregisterPush {} => {
            gateway
                .unregister_push(&context.user, &context.device)
                .await
                .map_err(registration_error)?;
            context
                .send(json!({"op": "push_unregistered", "device_id": context.device}))
                .await;
        }
        ClientFrame::React {
            conversation_id,
            seq,
            emoji,
        }
        | ClientFrame::Unreact {
            conversation_id,
            seq,
            emoji,
        } => {
            let remove = matches!(frame_kind, FrameKind::Unreact);
            let mut data = json!({"conversation_id": conversation_id, "seq": seq, "user_id": context.user, "emoji": emoji});
            if remove {
                data["remove"] = json!(true);
            }
            // The pushed `reacted` reaches every member's devices, this
            // one's too; a refusal comes back as an error frame.
            submit_in_background(gateway, context, "im.message.react", data).await;
        }
        ClientFrame::Block { user_id } | ClientFrame::Unblock { user_id } => {
            let (event_type, op) = match frame_kind {
                FrameKind::Block => ("im.user.block", "blocked"),
                _ => ("im.user.unblock", "unblocked"),
            };
            let data = json!({"user_id": context.user, "blocked_user_id": user_id});
            submit_then(gateway, context, event_type, data, move |_, _| async move {
                Some(json!({"op": op, "user_id": user_id}))
            })
            .await;
        }
        ClientFrame::Receipts { conversation_id } => {
            require_member(gateway, &conversation_id, &context.user).await?;
            let store = gateway.conversations.clone();
            let conversation = conversation_id.clone();
            let frame = tokio::task::spawn_blocking(move || {
                let Some(record) = store.conversation(&conversation)? else {
                    return Ok(None);
                };
                let receipts = store.receipts(&conversation)?;
                Ok::<_, im_store::StoreError>(Some(receipts_frame(
                    &record,
                    if record.diffusion == im_events::Diffusion::Write {
                        store.current_members(&conversation)?
                    } else {
                        vec![]
                    },
                    receipts,
                )))
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)?
            .ok_or_else(|| not_member(&context.user, &conversation_id))?;
            context.send(frame).await;
        }
        ClientFrame::Presence { users } => {
            require_shared(gateway, &context.user, &users).await?;
            let entries = gateway.presence_hub.lookup(&users).await;
            context
                .send(json!({"op": "presence_result", "users": entries}))
                .await;
        }
        ClientFrame::PresenceSubscribe { users } => {
            require_shared(gateway, &context.user, &users).await?;
            gateway
                .presence_hub
                .subscribe(
                    context.connection,
                    &context.outbox,
                    &users,
                    frames::MAX_PRESENCE_USERS,
                )
                .map_err(|wanted| {
                    FrameError::new(
                        "limit_reached",
                        format!(
                            "a connection follows at most {} users ({wanted} asked); unsubscribe some first",
                            frames::MAX_PRESENCE_USERS
                        ),
                    )
                })?;
            let entries = gateway.presence_hub.lookup(&users).await;
            context
                .send(json!({"op": "presence_result", "users": entries}))
                .await;
        }
        ClientFrame::PresenceUnsubscribe { users } => {
            gateway.presence_hub.unsubscribe(context.connection, &users);
            context
                .send(json!({"op": "presence_unsubscribed", "users": users}))
                .await;
        }
        ClientFrame::Delivered { sync_seq } => {
            let key = crate::kv_key(&context.user, &context.device);
            let current = match gateway.delivered.get(&key).await {
                Ok(Some(value)) => String::from_utf8_lossy(&value).parse::<u64>().unwrap_or(0),
                _ => 0,
            };
            if sync_seq > current {
                report_delivery(gateway, context, current, sync_seq).await;
                gateway
                    .delivered
                    .put(&key, sync_seq.to_string().into())
                    .await
                    .map_err(|error| {
                        FrameError::new(
                            "unavailable",
                            format!("delivered cursor not saved: {error}; send it again"),
                        )
                    })?;
            }
        }
    }
    Ok(())
}

/// Which of a shared match arm's frames it was.
pub(super) enum FrameKind {
    Unreact,
    Block,
    Other,
}
