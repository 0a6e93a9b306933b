//! The chaos verifier, pure: what the clients saw (the ledger), what each
//! device reads back at the end, and what the push receiver got → the
//! violations. No IO, so every rule is unit-tested below.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

/// What the clients saw.
#[derive(Default, Clone)]
pub struct Ledger {
    /// client_msg_id → (conversation, sender).
    pub sent: HashMap<String, (String, String)>,
    /// client_msg_id → (message_id, seq).
    pub acked: HashMap<String, (String, u64)>,
    pub errors: BTreeMap<String, u64>,
    /// A few distinct messages per error code, to tell what went wrong.
    pub error_samples: BTreeMap<String, Vec<String>>,
    pub resends: u64,
}

impl Ledger {
    /// Each acked message by conversation and seq; two messages acked
    /// with one seq are a violation.
    pub fn by_conversation(
        &self,
        violations: &mut Vec<String>,
    ) -> BTreeMap<String, BTreeMap<u64, String>> {
        let mut by_conversation: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
        for (client_id, (message_id, seq)) in &self.acked {
            let Some((conversation, _)) = self.sent.get(client_id) else {
                violations.push(format!("{client_id} was acked but never sent"));
                continue;
            };
            if let Some(other) = by_conversation
                .entry(conversation.clone())
                .or_default()
                .insert(*seq, message_id.clone())
            {
                if other != *message_id {
                    violations.push(format!(
                        "{conversation} seq {seq} acked for two messages: {other} and {message_id}"
                    ));
                }
            }
        }
        by_conversation
    }
}

/// One device's view at the end: its whole sync log and conversation list.
pub struct Readback {
    pub user: String,
    /// The conversations the user is a member of.
    pub conversations: Vec<String>,
    pub items: Vec<Value>,
    pub list: Value,
}

/// Every acked message in every member's sync log exactly once, in seq
/// order; unread exact (the user's own message marks read); no committed
/// seq without an ack. Returns the verified deliveries.
pub fn verify_deliveries(
    ledger: &Ledger,
    readbacks: &[Readback],
    violations: &mut Vec<String>,
) -> u64 {
    let unacked: Vec<&String> = ledger
        .sent
        .keys()
        .filter(|id| !ledger.acked.contains_key(*id))
        .collect();
    for id in unacked.iter().take(10) {
        violations.push(format!("{id} was never acked"));
    }
    let by_conversation = ledger.by_conversation(violations);
    let mut verified = 0u64;
    let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
    for readback in readbacks {
        let user = &readback.user;
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut own: BTreeMap<String, u64> = BTreeMap::new();
        let mut newest: BTreeMap<String, u64> = BTreeMap::new();
        for item in readback.items.iter().filter(|i| i["type"] == "message") {
            let id = item["message_id"].as_str().unwrap_or_default().to_string();
            let conversation = item["conversation_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let seq = item["seq"].as_u64().unwrap_or(0);
            *seen.entry(id).or_default() += 1;
            order.entry(conversation.clone()).or_default().push(seq);
            let top = newest.entry(conversation.clone()).or_default();
            *top = (*top).max(seq);
            if item["sender_id"] == user.as_str() {
                let mine = own.entry(conversation).or_default();
                *mine = (*mine).max(seq);
            }
        }
        for (id, count) in &seen {
            if *count > 1 {
                violations.push(format!("{user} got message {id} {count} times"));
            }
        }
        for (conversation, seqs) in &order {
            if seqs.windows(2).any(|w| w[0] >= w[1]) {
                violations.push(format!(
                    "{user}: {conversation} out of seq order in the sync log"
                ));
            }
            let top = last_seq.entry(conversation.clone()).or_default();
            *top = (*top).max(*seqs.iter().max().unwrap_or(&0));
        }
        for (client_id, (message_id, _)) in &ledger.acked {
            let Some((conversation, _)) = ledger.sent.get(client_id) else {
                continue;
            };
            if !readback.conversations.contains(conversation) {
                continue;
            }
            if seen.contains_key(message_id) {
                verified += 1;
            } else {
                violations.push(format!(
                    "{user} never got {message_id} ({client_id} in {conversation})"
                ));
            }
        }
        let mut total = 0;
        for item in readback.list["items"].as_array().into_iter().flatten() {
            let conversation = item["conversation_id"].as_str().unwrap_or_default();
            let expected = newest
                .get(conversation)
                .copied()
                .unwrap_or(0)
                .saturating_sub(own.get(conversation).copied().unwrap_or(0));
            let unread = item["unread"].as_u64().unwrap_or(u64::MAX);
            total += unread;
            if unread != expected {
                violations.push(format!(
                    "{user}: unread of {conversation} is {unread}, expected {expected}"
                ));
            }
        }
        if readback.list["total_unread"].as_u64() != Some(total) {
            violations.push(format!(
                "{user}: total_unread {} is not the sum {total}",
                readback.list["total_unread"]
            ));
        }
    }
    for (conversation, seqs) in &by_conversation {
        let top = last_seq.get(conversation).copied().unwrap_or(0);
        let all: HashSet<u64> = seqs.keys().copied().collect();
        if let Some(gap) = (1..=top).find(|s| !all.contains(s)) {
            // A committed message whose ack was lost and never resent
            // (the sender had moved on) would show here: name it.
            violations.push(format!(
                "{conversation}: seq {gap} was committed but no client holds its ack"
            ));
        }
    }
    verified
}

/// A notification as the push receiver got it (the webhook's JSON body).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Notice {
    pub notification_id: String,
    pub user_id: String,
    pub device_id: String,
    pub conversation_id: String,
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A device that stays offline for the whole run, with a push token.
pub struct OfflineDevice {
    pub user: String,
    pub device: String,
    pub conversations: Vec<String>,
}

#[derive(Debug, Default, PartialEq)]
pub struct NotificationReport {
    /// Distinct notifications received.
    pub notifications: u64,
    /// (device, acked message) pairs covered by exactly one notification.
    pub verified: u64,
    /// Notifications received again with the same id (a resend after a
    /// crash between the provider's acceptance and the log write: receivers
    /// drop it by its `webhook-id`, so it is counted, not a violation).
    pub resent: u64,
    /// (device, acked message) pairs no notification covers yet.
    pub missing: u64,
}

/// Every acked message to an offline device is covered by exactly one
/// notification (its `first_seq..=last_seq`) per device and conversation,
/// distinct notifications never overlap, and each one's count is the size
/// of its range (every seq of a write-diffusion conversation reaches every
/// member).
pub fn verify_notifications(
    ledger: &Ledger,
    devices: &[OfflineDevice],
    notices: &[Notice],
    violations: &mut Vec<String>,
) -> NotificationReport {
    let mut ignored = Vec::new();
    let by_conversation = ledger.by_conversation(&mut ignored);
    let mut report = NotificationReport::default();
    let mut distinct: BTreeMap<&str, &Notice> = BTreeMap::new();
    for notice in notices {
        match distinct.get(notice.notification_id.as_str()) {
            Some(first) if *first == notice => report.resent += 1,
            Some(first) => violations.push(format!(
                "notification {} came twice with different contents: {first:?} and {notice:?}",
                notice.notification_id
            )),
            None => {
                distinct.insert(&notice.notification_id, notice);
            }
        }
    }
    report.notifications = distinct.len() as u64;
    for notice in distinct.values() {
        let span = notice.last_seq.saturating_sub(notice.first_seq) + 1;
        if notice.first_seq == 0 || notice.last_seq < notice.first_seq || notice.count != span {
            violations.push(format!(
                "notification {} to {}/{} says {} messages for seqs {}..={} of {}",
                notice.notification_id,
                notice.user_id,
                notice.device_id,
                notice.count,
                notice.first_seq,
                notice.last_seq,
                notice.conversation_id
            ));
        }
    }
    for device in devices {
        for conversation in &device.conversations {
            let covering: Vec<&Notice> = distinct
                .values()
                .filter(|n| {
                    n.user_id == device.user
                        && n.device_id == device.device
                        && &n.conversation_id == conversation
                })
                .copied()
                .collect();
            let acked: BTreeSet<u64> = by_conversation
                .get(conversation)
                .map(|seqs| seqs.keys().copied().collect())
                .unwrap_or_default();
            for seq in &acked {
                let count = covering
                    .iter()
                    .filter(|n| (n.first_seq..=n.last_seq).contains(seq))
                    .count();
                match count {
                    1 => report.verified += 1,
                    0 => {
                        report.missing += 1;
                        violations.push(format!(
                            "{}/{} was never notified of {conversation} seq {seq}",
                            device.user, device.device
                        ));
                    }
                    n => violations.push(format!(
                        "{}/{} was notified of {conversation} seq {seq} by {n} notifications",
                        device.user, device.device
                    )),
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests;
