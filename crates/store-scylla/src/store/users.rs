//! The user store on ScyllaDB: per-user conversation rows and the sync log.

use super::*;

impl UserStore for ScyllaStore {
    fn user_conversation(
        &self,
        user_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<UserConversation>> {
        let (user, id) = (user_id.to_string(), conversation_id.to_string());
        self.run(|db| async move {
            db.one::<UserConversationRow>("user_conversation", vec![text(user), text(id)])
                .await?
                .map(user_conversation_from_row)
                .transpose()
        })
    }

    fn user_conversations(&self, user_id: &str) -> StoreResult<Vec<UserConversation>> {
        let user = user_id.to_string();
        self.run(|db| async move {
            // The static head makes a row with no conversation when the
            // user has none: skip it.
            let rows: Vec<WideUserRow> = db.select("user_conversations", vec![text(user)]).await?;
            rows.into_iter()
                .filter_map(
                    |(user, id, last, read, joined, diffusion, muted, last_message)| {
                        Some((
                            user,
                            id?,
                            last?,
                            read?,
                            joined?,
                            diffusion?,
                            muted,
                            last_message,
                        ))
                    },
                )
                .map(user_conversation_from_row)
                .collect()
        })
    }

    fn last_sync_seq(&self, user_id: &str) -> StoreResult<u64> {
        let user = user_id.to_string();
        self.run(|db| async move { head(&db, &user).await })
    }

    fn effect_applied(&self, user_id: &str, key: &str) -> StoreResult<bool> {
        let (user, key) = (user_id.to_string(), key.to_string());
        self.run(|db| async move {
            Ok(db
                .one::<(String,)>("effect", vec![text(user), text(key)])
                .await?
                .is_some())
        })
    }

    fn compact_sync(&self, user_id: &str, through: u64) -> StoreResult<u64> {
        let user = user_id.to_string();
        self.run(move |db| async move {
            let old = floor(&db, &user).await?;
            if through <= old {
                return Ok(old);
            }
            // The floor first: a reader that sees it resyncs, whether or
            // not the rows below are gone yet.
            db.exec("sync_floor_put", vec![text(&user), big(through)])
                .await?;
            for bucket in sync_buckets(old, through) {
                // The applied-event markers of the items going, first.
                for row in sync_page(&db, &user, bucket, old, through, i32::MAX as u32).await? {
                    db.exec("effect_delete", vec![text(&user), text(&row.event_key)])
                        .await?;
                }
                db.exec("sync_compact", vec![text(&user), big(bucket), big(through)])
                    .await?;
            }
            Ok(through)
        })
    }

    fn sync_floor(&self, user_id: &str) -> StoreResult<u64> {
        let user = user_id.to_string();
        self.run(|db| async move { floor(&db, &user).await })
    }

    fn sync_items(&self, user_id: &str, after: u64, limit: usize) -> StoreResult<Vec<SyncRecord>> {
        let user = user_id.to_string();
        self.run(move |db| async move {
            // Only what the head covers: items past it belong to a batch
            // that has not finished (and will be written again the same).
            let until = head(&db, &user).await?;
            let mut items = Vec::new();
            if until <= after {
                return Ok(items);
            }
            for bucket in sync_buckets(after, until) {
                let wanted = limit - items.len();
                items.extend(sync_page(&db, &user, bucket, after, until, wanted as u32).await?);
                if items.len() >= limit {
                    break;
                }
            }
            Ok(items)
        })
    }

    fn apply(&self, fence: &Fence, effects: &[UserEffect]) -> StoreResult<()> {
        let (fence, effects) = (fence.clone(), effects.to_vec());
        self.run(|db| async move {
            db.check_fence(&fence).await?;
            // Validate: a sync_seq already holding another item is a conflict.
            for effect in &effects {
                if let UserEffect::AppendSync(record) = effect {
                    let existing: Option<SyncRow> = db
                        .one(
                            "sync_get",
                            vec![
                                text(&record.user_id),
                                big(sync_bucket(record.sync_seq)),
                                big(record.sync_seq),
                            ],
                        )
                        .await?;
                    if existing.is_some_and(|row| row.2 != record.event_key) {
                        return Err(StoreError::SeqConflict {
                            conversation_id: format!("user:{}", record.user_id),
                            seq: record.sync_seq,
                        });
                    }
                }
            }
            // 1. Sync items (idempotent: a redelivered batch writes the same).
            let mut by_partition: BTreeMap<(String, i64), Statements> = BTreeMap::new();
            for effect in &effects {
                if let UserEffect::AppendSync(record) = effect {
                    by_partition
                        .entry((record.user_id.clone(), sync_bucket(record.sync_seq)))
                        .or_default()
                        .push((
                            "sync_put",
                            vec![
                                text(&record.user_id),
                                big(sync_bucket(record.sync_seq)),
                                big(record.sync_seq),
                                text(&record.event_key),
                                text(
                                    serde_json::to_string(&record.item)
                                        .map_err(|e| StoreError::Backend(e.to_string()))?,
                                ),
                            ],
                        ));
                }
            }
            for (_, statements) in by_partition {
                db.batch(statements).await?;
            }
            // 2. Per user, one single-partition batch: rows and the head.
            let mut by_user: BTreeMap<String, (Statements, u64)> = BTreeMap::new();
            for effect in &effects {
                match effect {
                    UserEffect::PutUserConversation(row) => by_user
                        .entry(row.user_id.clone())
                        .or_default()
                        .0
                        .push(("user_conversation_put", user_conversation_values(row))),
                    UserEffect::DeleteUserConversation {
                        user_id,
                        conversation_id,
                    } => by_user.entry(user_id.clone()).or_default().0.push((
                        "user_conversation_delete",
                        vec![text(user_id), text(conversation_id)],
                    )),
                    UserEffect::AppendSync(record) => {
                        let entry = by_user.entry(record.user_id.clone()).or_default();
                        entry.1 = entry.1.max(record.sync_seq);
                    }
                    UserEffect::MarkApplied { .. } => {}
                }
            }
            for (user, (mut statements, new_head)) in by_user {
                if new_head > 0 {
                    statements.push(("user_head_set", vec![big(new_head), text(&user)]));
                }
                db.batch(statements).await?;
            }
            // 3. Applied marks last: a crash before them repeats an edit or
            // recall item, never loses one.
            for effect in &effects {
                if let UserEffect::MarkApplied { user_id, key } = effect {
                    db.exec("effect_put", vec![text(user_id), text(key)])
                        .await?;
                }
            }
            Ok(())
        })
    }

    fn dump(&self) -> StoreResult<Vec<String>> {
        self.run(|db| async move {
            let mut lines = Vec::new();
            let mut rows: Vec<WideUserRow> = db.scan("dump_user_conversations", vec![]).await?;
            rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            for (user, id, last, read, joined, diffusion, muted, last_message) in rows {
                let (Some(id), Some(last), Some(read), Some(joined), Some(diffusion)) = (id, last, read, joined, diffusion) else {
                    continue;
                };
                lines.push(format!("user_conversation\t{user}\t{id}\t{last}\t{read}\t{joined}\t{diffusion}\t{}\t{}", muted.unwrap_or(-1), last_message.unwrap_or_default()));
            }
            let mut items: Vec<SyncRow> = db.scan("dump_sync", vec![]).await?;
            items.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
            let mut heads: BTreeMap<String, (i64, u64)> = BTreeMap::new();
            for (user, seq, key, item) in &items {
                lines.push(format!("sync_item\t{user}\t{key}\t{item}"));
                let entry = heads.entry(user.clone()).or_default();
                entry.0 = entry.0.max(*seq);
                entry.1 += 1;
            }
            for (user, (max, count)) in heads {
                lines.push(format!("sync_head\t{user}\t{max}\t{count}"));
            }
            let mut effects: Vec<(String, String)> = db.scan("dump_effects", vec![]).await?;
            effects.sort();
            lines.extend(effects.into_iter().map(|(user, key)| format!("effect\t{user}\t{key}")));
            Ok(lines)
        })
    }
}

/// One sync bucket's items with after < sync_seq <= until, ascending.
pub(super) async fn sync_page(
    db: &Inner,
    user: &str,
    bucket: i64,
    after: u64,
    until: u64,
    limit: u32,
) -> StoreResult<Vec<SyncRecord>> {
    let rows: Vec<SyncRow> = db
        .select(
            "sync_page",
            vec![text(user), big(bucket), big(after), big(until), int(limit)],
        )
        .await?;
    rows.into_iter().map(sync_from_row).collect()
}

pub(super) async fn floor(db: &Inner, user: &str) -> StoreResult<u64> {
    Ok(db
        .one::<(Option<i64>,)>("sync_floor", vec![text(user)])
        .await?
        .and_then(|(floor,)| floor)
        .unwrap_or(0)
        .max(0) as u64)
}

pub(super) async fn head(db: &Inner, user: &str) -> StoreResult<u64> {
    let row: Option<(Option<i64>,)> = db.one("user_head", vec![text(user)]).await?;
    Ok(row.and_then(|(head,)| head).unwrap_or(0).max(0) as u64)
}
