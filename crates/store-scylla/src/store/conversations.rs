//! The conversation store on ScyllaDB.

use super::*;

impl ConversationStore for ScyllaStore {
    fn conversation(&self, conversation_id: &str) -> StoreResult<Option<ConversationRecord>> {
        let id = conversation_id.to_string();
        self.run(|db| async move {
            db.one::<ConversationRow>("conversation", vec![text(id)])
                .await?
                .map(conversation_from_row)
                .transpose()
        })
    }

    fn memberships(&self, conversation_id: &str, users: &[String]) -> StoreResult<Vec<Membership>> {
        let (id, users) = (conversation_id.to_string(), users.to_vec());
        self.run(|db| async move {
            let mut found = Vec::new();
            for user in users {
                let rows: Vec<(i64, String, Option<i64>)> =
                    db.select("member", vec![text(&id), text(&user)]).await?;
                if let Some((joined_seq, role, _)) =
                    rows.into_iter().find(|(_, _, removed)| removed.is_none())
                {
                    found.push(Membership {
                        user_id: user,
                        role: Role::parse(&role),
                        joined_seq: joined_seq as u64,
                    });
                }
            }
            Ok(found)
        })
    }

    fn members_at(&self, conversation_id: &str, seq: u64) -> StoreResult<Vec<String>> {
        let id = conversation_id.to_string();
        self.run(move |db| async move {
            let seq = seq as i64;
            let rows = db.members(&id).await?;
            Ok(sorted_unique(
                rows.into_iter()
                    .filter(|(_, added, _, removed)| {
                        *added < seq && removed.is_none_or(|r| r >= seq)
                    })
                    .map(|(user, ..)| user)
                    .collect(),
            ))
        })
    }

    fn current_members(&self, conversation_id: &str) -> StoreResult<Vec<String>> {
        let id = conversation_id.to_string();
        self.run(|db| async move {
            let rows = db.members(&id).await?;
            Ok(sorted_unique(
                rows.into_iter()
                    .filter(|(.., removed)| removed.is_none())
                    .map(|(user, ..)| user)
                    .collect(),
            ))
        })
    }

    fn idempotency(&self, source: &str, event_id: &str) -> StoreResult<Option<IdempotencyRecord>> {
        let (source, event_id) = (source.to_string(), event_id.to_string());
        self.run(|db| async move {
            let row: Option<IdempotencyRow> = db
                .one("idempotency", vec![text(&source), text(&event_id)])
                .await?;
            row.map(
                |(conversation_id, seq, message_id, outputs, recorded_at_ms, fingerprint)| {
                    Ok(IdempotencyRecord {
                        source: source.clone(),
                        event_id: event_id.clone(),
                        conversation_id,
                        seq: seq.map(|s| s as u64),
                        message_id,
                        outputs: serde_json::from_str(&outputs)
                            .map_err(|e| StoreError::Backend(format!("stored outputs: {e}")))?,
                        recorded_at_ms,
                        fingerprint: fingerprint.unwrap_or_default(),
                    })
                },
            )
            .transpose()
        })
    }

    fn message(&self, conversation_id: &str, seq: u64) -> StoreResult<Option<StoredMessage>> {
        let id = conversation_id.to_string();
        self.run(move |db| async move { db.message(&id, seq).await })
    }

    fn history(
        &self,
        conversation_id: &str,
        before_seq: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        let id = conversation_id.to_string();
        self.run(move |db| async move { history(&db, &id, before_seq, limit).await })
    }

    fn reactions(
        &self,
        conversation_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> StoreResult<Vec<Reaction>> {
        let id = conversation_id.to_string();
        self.run(move |db| async move {
            let mut found = Vec::new();
            if from_seq > to_seq {
                return Ok(found);
            }
            for bucket in message_bucket(from_seq)..=message_bucket(to_seq) {
                let rows: Vec<(i64, String, String)> = db
                    .select(
                        "reactions",
                        vec![text(&id), big(bucket), big(from_seq), big(to_seq)],
                    )
                    .await?;
                found.extend(rows.into_iter().map(|(seq, emoji, user_id)| Reaction {
                    conversation_id: id.clone(),
                    seq: seq as u64,
                    emoji,
                    user_id,
                }));
            }
            found.sort();
            Ok(found)
        })
    }

    fn blocked(&self, user_id: &str, blocked_user_id: &str) -> StoreResult<bool> {
        let key = vec![text(user_id), text(blocked_user_id)];
        self.run(move |db| async move { Ok(db.one::<(String,)>("block", key).await?.is_some()) })
    }

    fn receipts(&self, conversation_id: &str) -> StoreResult<Vec<Receipt>> {
        let id = conversation_id.to_string();
        self.run(move |db| async move {
            let rows: Vec<(String, i64, i64)> = db.select("receipts", vec![text(&id)]).await?;
            let mut receipts: Vec<Receipt> = rows
                .into_iter()
                .map(|(user_id, read, delivered)| Receipt {
                    user_id,
                    read_seq: read as u64,
                    delivered_seq: delivered as u64,
                })
                .collect();
            receipts.sort_by(|a, b| a.user_id.cmp(&b.user_id));
            Ok(receipts)
        })
    }

    fn receipt(&self, conversation_id: &str, user_id: &str) -> StoreResult<Option<Receipt>> {
        let (key, user) = (
            vec![text(conversation_id), text(user_id)],
            user_id.to_string(),
        );
        self.run(move |db| async move {
            Ok(db
                .one::<(i64, i64)>("receipt", key)
                .await?
                .map(|(read, delivered)| Receipt {
                    user_id: user,
                    read_seq: read as u64,
                    delivered_seq: delivered as u64,
                }))
        })
    }

    fn apply(&self, fence: &Fence, effects: &[ConversationEffect]) -> StoreResult<()> {
        let (fence, effects) = (fence.clone(), effects.to_vec());
        self.run(|db| async move {
            db.check_fence(&fence).await?;
            // Validate: claim every seq first; a conflict stops the batch
            // before anything is written (a claim by the same message is
            // that message's own, so a retry passes).
            for effect in &effects {
                if let ConversationEffect::InsertMessage(message) = effect {
                    let key = vec![
                        text(&message.conversation_id),
                        big(message_bucket(message.seq)),
                        big(message.seq),
                    ];
                    let (claimed, _) = db
                        .lwt(
                            "seq_claim",
                            [key.clone(), vec![text(&message.message_id)]].concat(),
                        )
                        .await?;
                    if !claimed {
                        let owner: Option<(String,)> = db.one("seq_claimed", key).await?;
                        if owner.map(|(id,)| id) != Some(message.message_id.clone()) {
                            return Err(StoreError::SeqConflict {
                                conversation_id: message.conversation_id.clone(),
                                seq: message.seq,
                            });
                        }
                    }
                }
            }
            for effect in &effects {
                apply_conversation_effect(&db, effect).await?;
            }
            // Where history starts: the newest seq of each conversation.
            let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
            for effect in &effects {
                if let ConversationEffect::InsertMessage(m) = effect {
                    let entry = newest.entry(m.conversation_id.as_str()).or_default();
                    *entry = (*entry).max(m.seq);
                }
            }
            for (conversation_id, seq) in newest {
                let current: Option<(i64,)> =
                    db.one("message_head", vec![text(conversation_id)]).await?;
                if current.is_none_or(|(max,)| (max as u64) < seq) {
                    db.exec("message_head_put", vec![text(conversation_id), big(seq)])
                        .await?;
                }
            }
            Ok(())
        })
    }

    fn dump(&self) -> StoreResult<Vec<String>> {
        self.run(|db| async move {
            let mut lines = Vec::new();
            let mut conversations: Vec<ConversationRow> =
                db.scan("dump_conversations", vec![]).await?;
            conversations.sort_by(|a, b| a.0.cmp(&b.0));
            for (id, kind, title, last_seq, diffusion, members, created, visibility) in &conversations {
                lines.push(format!(
                    "conversation\t{id}\t{kind}\t{}\t{last_seq}\t{diffusion}\t{members}\t{created}\t{}",
                    title.clone().unwrap_or_default(),
                    visibility.as_deref().unwrap_or("joined")
                ));
            }
            let mut members: Vec<(String, String, String, i64, Option<i64>)> =
                db.scan("dump_members", vec![]).await?;
            members.sort_by(|a, b| (&a.0, &a.1, a.3).cmp(&(&b.0, &b.1, b.3)));
            for (conversation, user, role, added, removed) in members {
                lines.push(format!(
                    "member\t{conversation}\t{user}\t{role}\t{added}\t{}",
                    removed.unwrap_or(-1)
                ));
            }
            for (id, ..) in &conversations {
                let mut before = None;
                let mut all = Vec::new();
                loop {
                    let page = history(&db, id, before, 500).await?;
                    let Some(first) = page.first() else { break };
                    before = Some(first.seq);
                    all.splice(0..0, page);
                }
                lines.extend(all.iter().map(im_store::sqlite::message_line));
            }
            let mut records: Vec<IdempotencyDumpRow> = db.scan("dump_idempotency", vec![]).await?;
            records.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            for (source, event, conversation, seq, message, outputs) in records {
                lines.push(format!(
                    "idempotency\t{source}\t{event}\t{conversation}\t{}\t{}\t{outputs}",
                    seq.unwrap_or(-1),
                    message.unwrap_or_default()
                ));
            }
            let mut reactions: Vec<(String, i64, String, String)> =
                db.scan("dump_reactions", vec![]).await?;
            reactions.sort();
            for (conversation, seq, emoji, user) in reactions {
                lines.push(format!("reaction\t{conversation}\t{seq}\t{emoji}\t{user}"));
            }
            let mut blocks: Vec<(String, String)> = db.scan("dump_blocks", vec![]).await?;
            blocks.sort();
            for (user, blocked) in blocks {
                lines.push(format!("block\t{user}\t{blocked}"));
            }
            let mut receipts: Vec<(String, String, i64, i64)> =
                db.scan("dump_receipts", vec![]).await?;
            receipts.sort();
            for (conversation, user, read, delivered) in receipts {
                lines.push(format!("receipt\t{conversation}\t{user}\t{read}\t{delivered}"));
            }
            Ok(lines)
        })
    }

    fn archive(
        &self,
        policy: &TieringPolicy,
        now_ms: i64,
        progress: &mut dyn FnMut(&ArchiveReport),
    ) -> StoreResult<ArchiveReport> {
        // Hot rows expire by themselves (the table's TTL); a pass copies
        // what is past the hot window into the cold tier, with the
        // retention of its conversation kind as TTL, and remembers how far
        // it got per conversation. Copies are upserts: a pass killed midway
        // repeats some, loses none.
        let mut report = ArchiveReport::default();
        for shard in 0..CONVERSATION_INDEX_SHARDS as i32 {
            let policy = *policy;
            let conversations: Vec<(String, String)> = self.run(move |db| async move {
                db.scan("index_shard", vec![Some(CqlValue::Int(shard))])
                    .await
            })?;
            for (conversation_id, kind) in conversations {
                let moved = self.run(move |db| async move {
                    archive_conversation(&db, &conversation_id, &kind, &policy, now_ms).await
                })?;
                report.conversations += 1;
                report.moved += moved;
                report.segments += u64::from(moved > 0);
                progress(&report);
            }
        }
        Ok(report)
    }

    fn tier_stats(&self) -> StoreResult<TierStats> {
        // The cluster's own estimates (system.size_estimates); message
        // counts are not kept, so they read 0.
        self.run(|db| async move {
            let rows: Vec<(String, i64, i64)> = db
                .select("size_estimates", vec![text(&db.config.keyspace)])
                .await?;
            let mut stats = TierStats::default();
            for (table, partitions, mean) in rows {
                let bytes = (partitions.max(0) * mean.max(0)) as u64;
                match table.as_str() {
                    "messages" => stats.hot_bytes += bytes,
                    "messages_cold" => stats.cold_bytes += bytes,
                    _ => {}
                }
            }
            Ok(stats)
        })
    }
}

/// Up to `limit` messages below `before_seq`, ascending: newest first,
/// bucket by bucket, and within a bucket the hot tier wins over a cold copy
/// of the same seq.
pub(super) async fn history(
    db: &Inner,
    id: &str,
    before_seq: Option<u64>,
    limit: usize,
) -> StoreResult<Vec<StoredMessage>> {
    let before = match before_seq {
        Some(before) => before,
        None => match db.one::<(i64,)>("message_head", vec![text(id)]).await? {
            Some((max,)) => max as u64 + 1,
            None => return Ok(vec![]),
        },
    };
    // Newest first, bucket by bucket; within a bucket the hot tier
    // wins over a cold copy of the same seq.
    let mut newest_first: Vec<StoredMessage> = Vec::new();
    for bucket in buckets_below(before) {
        let wanted = limit - newest_first.len();
        let key = vec![text(id), big(bucket), big(before), int(wanted as u32)];
        let mut page: BTreeMap<u64, StoredMessage> = BTreeMap::new();
        for row in db.select::<MessageRow>("hot_page", key.clone()).await? {
            let message = message_from_row(row)?;
            page.insert(message.seq, message);
        }
        if page.len() < wanted {
            for row in db.select::<MessageRow>("cold_page", key).await? {
                let message = message_from_row(row)?;
                page.entry(message.seq).or_insert(message);
            }
        }
        newest_first.extend(page.into_values().rev().take(wanted));
        if newest_first.len() >= limit {
            break;
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

pub(super) async fn archive_conversation(
    db: &Inner,
    conversation_id: &str,
    kind: &str,
    policy: &TieringPolicy,
    now_ms: i64,
) -> StoreResult<u64> {
    let cutoff = im_events::rfc3339_ms(now_ms - policy.hot_window_ms);
    let retain = match kind {
        "direct" => policy.retain_direct_ms,
        _ => policy.retain_group_ms,
    };
    let ttl = retain.map(|ms| (ms / 1000).max(1)).unwrap_or(0);
    let from: Option<(Option<i64>,)> = db
        .one("conversation_archived", vec![text(conversation_id)])
        .await?;
    let mut after = from.and_then(|(seq,)| seq).unwrap_or(0) as u64;
    let mut moved = 0;
    loop {
        let rows: Vec<MessageRow> = db
            .select(
                "hot_ascending",
                vec![
                    text(conversation_id),
                    big(message_bucket(after + 1)),
                    big(after),
                    int(policy.segment_messages as u32),
                ],
            )
            .await?;
        let old: Vec<StoredMessage> = rows
            .into_iter()
            .map(message_from_row)
            .collect::<StoreResult<Vec<_>>>()?
            .into_iter()
            .take_while(|m| m.sent_at < cutoff)
            .collect();
        let Some(last) = old.last().map(|m| m.seq) else {
            // Nothing old in this bucket: maybe the next bucket starts old.
            let next_bucket_start =
                (message_bucket(after + 1) as u64 + 1) * crate::buckets::MESSAGES_PER_BUCKET;
            let probe: Vec<MessageRow> = db
                .select(
                    "hot_ascending",
                    vec![
                        text(conversation_id),
                        big(message_bucket(next_bucket_start)),
                        big(next_bucket_start - 1),
                        int(1),
                    ],
                )
                .await?;
            match probe.into_iter().next().map(message_from_row).transpose()? {
                Some(first) if first.sent_at < cutoff && first.seq > after => {
                    after = first.seq - 1;
                    continue;
                }
                _ => break,
            }
        };
        for message in &old {
            let mut values = message_values(message);
            values.push(Some(CqlValue::Int(ttl.min(i32::MAX as i64) as i32)));
            db.exec("cold_put", values).await?;
        }
        moved += old.len() as u64;
        after = last;
        db.exec(
            "conversation_archived_set",
            vec![big(after), text(conversation_id)],
        )
        .await?;
    }
    Ok(moved)
}
