//! A batch of timeline events → one delivery envelope per user partition.

use super::*;

/// Pure: a batch's deliveries, one stream message per user partition that
/// has recipients, carrying that partition's events in order: a batch of
/// 1:1 messages costs at most one write per user partition, not two per
/// message. The message id is derived from the events it carries, so a
/// redelivered batch is dropped as a duplicate (and if it is regrouped
/// differently, unread and offline still apply each event once).
pub fn batch_deliveries(
    events: &[(TimelineEvent, Vec<String>, Option<im_events::Trace>)],
    user_partitions: u32,
    time: &str,
) -> Vec<(String, String, Delivery)> {
    let mut by_partition: BTreeMap<u32, Vec<DeliveryData>> = BTreeMap::new();
    for (event, recipients, trace) in events {
        let mut users_by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for user in recipients {
            users_by_partition
                .entry(partition_of(user, user_partitions))
                .or_default()
                .push(user.clone());
        }
        for (partition, users) in users_by_partition {
            by_partition
                .entry(partition)
                .or_default()
                .push(DeliveryData {
                    users,
                    event: event.clone(),
                    trace: trace.clone(),
                });
        }
    }
    by_partition
        .into_iter()
        .map(|(partition, mut list)| {
            if list.len() == 1 {
                let data = list.remove(0);
                let key = data.event.effect_key();
                let kind = delivery_kind(&data.event);
                let id = format!("dl:{key}:{partition}");
                let envelope = Envelope::new(
                    PIPELINE_SOURCE,
                    id.clone(),
                    time.to_string(),
                    DeliveryPayload::Delivery(data),
                );
                return (delivery_subject(partition, kind), id, envelope);
            }
            let keys: Vec<String> = list.iter().map(|d| d.event.effect_key()).collect();
            let id = format!(
                "dlb:{partition}:{}:{:016x}",
                list.len(),
                im_events::partition::fnv1a64(keys.join("\n").as_bytes())
            );
            let envelope = Envelope::new(
                PIPELINE_SOURCE,
                id.clone(),
                time.to_string(),
                DeliveryPayload::Deliveries(list),
            );
            (delivery_subject(partition, "batch"), id, envelope)
        })
        .collect()
}
