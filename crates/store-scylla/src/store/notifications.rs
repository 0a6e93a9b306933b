//! Notifications to offline devices on ScyllaDB.

use super::*;

impl NotificationStore for ScyllaStore {
    fn notify_state(
        &self,
        user_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<NotifyState>> {
        let (user, id) = (user_id.to_string(), conversation_id.to_string());
        self.run(|db| async move {
            db.one::<NotifyStateRow>("notify_state", vec![text(user), text(id)])
                .await?
                .map(notify_state_from_row)
                .transpose()
        })
    }

    fn due_states(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<NotifyState>> {
        self.run(move |db| async move {
            let due: Vec<(i64, String, String)> = db
                .select(
                    "notify_due",
                    vec![int(partition), big(now_ms), int(limit as u32)],
                )
                .await?;
            let mut states = Vec::new();
            for (due_ms, user, conversation) in due {
                let row = db
                    .one::<NotifyStateRow>("notify_state", vec![text(&user), text(&conversation)])
                    .await?;
                if let Some(state) = row.map(notify_state_from_row).transpose()? {
                    if state.pending > 0 && state.due_ms == due_ms {
                        states.push(state);
                    }
                }
            }
            Ok(states)
        })
    }

    fn ready_notifications(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<NotificationRecord>> {
        self.run(move |db| async move {
            let ready: Vec<(i64, String)> = db
                .select(
                    "ready",
                    vec![int(partition), big(now_ms), int(limit as u32)],
                )
                .await?;
            let mut records = Vec::new();
            for (_, id) in ready {
                if let Some(row) = db
                    .one::<NotificationRow>("notification", vec![text(id)])
                    .await?
                {
                    let record = notification_from_row(row)?;
                    if record.status == NotificationStatus::Queued {
                        records.push(record);
                    }
                }
            }
            Ok(records)
        })
    }

    fn next_wakeup_ms(&self, partition: u32) -> StoreResult<Option<i64>> {
        self.run(move |db| async move {
            let due: Option<(i64,)> = db.one("notify_due_first", vec![int(partition)]).await?;
            let ready: Option<(i64,)> = db.one("ready_first", vec![int(partition)]).await?;
            Ok([due, ready].into_iter().flatten().map(|(t,)| t).min())
        })
    }

    fn notification(&self, id: &str) -> StoreResult<Option<NotificationRecord>> {
        let id = id.to_string();
        self.run(|db| async move {
            db.one::<NotificationRow>("notification", vec![text(id)])
                .await?
                .map(notification_from_row)
                .transpose()
        })
    }

    fn notification_log(
        &self,
        user_id: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let user = user_id.map(str::to_string);
        self.run(move |db| async move {
            let ids: Vec<(String,)> = match &user {
                Some(user) => {
                    db.select("log_user", vec![text(user), int(limit as u32)])
                        .await?
                }
                None => {
                    // Newest days first, until the limit.
                    let days: Vec<(String,)> = db.select("log_days", vec![]).await?;
                    let mut ids = Vec::new();
                    for (day,) in days {
                        ids.extend(
                            db.select::<(String,)>(
                                "log_day",
                                vec![text(day), int((limit - ids.len()) as u32)],
                            )
                            .await?,
                        );
                        if ids.len() >= limit {
                            break;
                        }
                    }
                    ids
                }
            };
            let mut records = Vec::new();
            for (id,) in ids {
                if let Some(row) = db
                    .one::<NotificationRow>("notification", vec![text(id)])
                    .await?
                {
                    records.push(notification_from_row(row)?);
                }
            }
            Ok(records)
        })
    }

    fn apply(&self, fence: &Fence, effects: &[NotifyEffect]) -> StoreResult<()> {
        let (fence, effects) = (fence.clone(), effects.to_vec());
        self.run(|db| async move {
            db.check_fence(&fence).await?;
            for effect in &effects {
                if let NotifyEffect::Settle { id, .. } = effect {
                    if db
                        .one::<NotificationRow>("notification", vec![text(id)])
                        .await?
                        .is_none()
                    {
                        return Err(StoreError::Backend(format!(
                            "notification {id} is not in the outbox"
                        )));
                    }
                }
            }
            for effect in &effects {
                match effect {
                    NotifyEffect::PutState(state) => {
                        let old: Option<NotifyStateRow> = db
                            .one(
                                "notify_state",
                                vec![text(&state.user_id), text(&state.conversation_id)],
                            )
                            .await?;
                        if let Some(old) = old
                            .map(notify_state_from_row)
                            .transpose()?
                            .filter(|old| old.pending > 0)
                        {
                            db.exec(
                                "notify_due_delete",
                                vec![
                                    int(old.partition),
                                    big(old.due_ms),
                                    text(&old.user_id),
                                    text(&old.conversation_id),
                                ],
                            )
                            .await?;
                        }
                        if state.pending > 0 {
                            db.exec(
                                "notify_due_put",
                                vec![
                                    int(state.partition),
                                    big(state.due_ms),
                                    text(&state.user_id),
                                    text(&state.conversation_id),
                                ],
                            )
                            .await?;
                        }
                        db.exec("notify_state_put", notify_state_values(state))
                            .await?;
                    }
                    NotifyEffect::Enqueue(record) => {
                        let (inserted, _) = db
                            .lwt("notification_put", notification_values(record))
                            .await?;
                        if inserted {
                            if record.status == NotificationStatus::Queued {
                                db.exec(
                                    "ready_put",
                                    vec![
                                        int(record.partition),
                                        big(record.next_attempt_ms),
                                        text(&record.id),
                                    ],
                                )
                                .await?;
                            }
                            db.exec(
                                "log_user_put",
                                vec![
                                    text(&record.user_id),
                                    big(record.created_ms),
                                    text(&record.id),
                                ],
                            )
                            .await?;
                            db.exec("log_days_put", vec![text(day_of(record.created_ms))])
                                .await?;
                            db.exec(
                                "log_day_put",
                                vec![
                                    text(day_of(record.created_ms)),
                                    big(record.created_ms),
                                    text(&record.id),
                                ],
                            )
                            .await?;
                        }
                    }
                    NotifyEffect::Settle {
                        id,
                        status,
                        attempts,
                        next_attempt_ms,
                        answer,
                        updated_ms,
                    } => {
                        let Some(row) = db
                            .one::<NotificationRow>("notification", vec![text(id)])
                            .await?
                        else {
                            continue;
                        };
                        let old = notification_from_row(row)?;
                        db.exec(
                            "ready_delete",
                            vec![int(old.partition), big(old.next_attempt_ms), text(id)],
                        )
                        .await?;
                        db.exec(
                            "notification_settle",
                            vec![
                                text(status.as_str()),
                                int(*attempts),
                                big(*next_attempt_ms),
                                opt_text(answer),
                                big(*updated_ms),
                                text(id),
                            ],
                        )
                        .await?;
                        if *status == NotificationStatus::Queued {
                            db.exec(
                                "ready_put",
                                vec![int(old.partition), big(*next_attempt_ms), text(id)],
                            )
                            .await?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    fn dump(&self) -> StoreResult<Vec<String>> {
        self.run(|db| async move {
            let mut states: Vec<NotifyStateRow> = db.scan("dump_notify_state", vec![]).await?;
            states.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            let mut lines: Vec<String> = states
                .into_iter()
                .map(|(u, c, p, counted, pending, first, last, mentioned, due, message)| {
                    format!("notify_state\t{u}\t{c}\t{p}\t{counted}\t{pending}\t{first}\t{last}\t{}\t{due}\t{}", mentioned as i64, message.unwrap_or_default())
                })
                .collect();
            let mut records: Vec<(String, String, String, String, String, String, String)> =
                db.scan("dump_notifications", vec![]).await?;
            records.sort();
            lines.extend(records.into_iter().map(|(id, u, d, p, c, payload, status)| format!("notification\t{id}\t{u}\t{d}\t{p}\t{c}\t{payload}\t{status}")));
            Ok(lines)
        })
    }
}
