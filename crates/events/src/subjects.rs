//! Subject and stream names. The stream definitions themselves live in
//! `schemas/streams.json`; these are the names code refers to.

pub const STREAM_INGEST: &str = "IM_INGEST";
pub const STREAM_ACCEPTED: &str = "IM_ACCEPTED";
pub const STREAM_TIMELINE: &str = "IM_TIMELINE";
pub const STREAM_DELIVERY: &str = "IM_DELIVERY";
pub const STREAM_EVENTS: &str = "IM_EVENTS";
pub const STREAM_DLQ: &str = "IM_DLQ";

pub const INGEST_PREFIX: &str = "im.ingest";
pub const REJECTED_SUBJECT: &str = "im.events.message.rejected";
pub const COMMITTED_SUBJECT: &str = "im.events.message.committed";
pub const LEASE_BUCKET: &str = "IM_LEASES";

/// `im.ingest.<type without im.>`, e.g. `im.ingest.message.send`.
pub fn ingest_subject(event_type: &str) -> String {
    format!(
        "{INGEST_PREFIX}.{}",
        event_type.strip_prefix("im.").unwrap_or(event_type)
    )
}

/// The event type a publisher meant by its ingest subject.
pub fn type_from_ingest_subject(subject: &str) -> Option<String> {
    subject
        .strip_prefix("im.ingest.")
        .map(|rest| format!("im.{rest}"))
}

pub fn accepted_subject(partition: u32, event_type: &str) -> String {
    format!(
        "im.accepted.{partition}.{}",
        event_type.strip_prefix("im.").unwrap_or(event_type)
    )
}

/// Timeline subjects have exactly two tokens after the partition so that the
/// stream can republish them as `im.events.<a>.<b>`.
pub fn timeline_subject(partition: u32, event_type: &str) -> String {
    format!(
        "im.timeline.{partition}.{}",
        event_type.strip_prefix("im.").unwrap_or(event_type)
    )
}

pub fn delivery_subject(partition: u32, kind: &str) -> String {
    format!("im.delivery.{partition}.{kind}")
}

pub fn dlq_subject(function: &str) -> String {
    format!("im.dlq.{function}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        assert_eq!(ingest_subject("im.message.send"), "im.ingest.message.send");
        assert_eq!(
            type_from_ingest_subject("im.ingest.conversation.members.add").as_deref(),
            Some("im.conversation.members.add")
        );
        assert_eq!(
            timeline_subject(3, "im.message.committed"),
            "im.timeline.3.message.committed"
        );
    }
}
