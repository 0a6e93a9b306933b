//! `ingest`: the front door. Parses every inbound CloudEvent (structured or
//! binary mode), validates it against its schema, normalizes it, applies the
//! checks that need no state, and forwards it to `im.accepted.<p>.<type>`,
//! partitioned by conversation so that one conversation's events stay in
//! order. Membership is checked by `dedupe`, the only place that sees a
//! conversation's events in order (a send right after its create must pass).
//! Everything refused ends in `IM_DLQ` with a reason.
//!
//! Ingest itself is partitioned like dedupe: partition p reads the events
//! publishers keyed by conversation and IM_INGEST's transform stored under
//! `im.keyed.p.…`; partition 0 also reads the unkeyed `im.ingest.>` ones
//! (see `im_events::subjects::keyed_ingest_subject`), and re-publishes
//! each one it can read keyed by its conversation instead of processing
//! it: processed where it was read, an unkeyed event would race the keyed
//! events of its conversation in another partition (a send right after a
//! keyed create refused as not_member). The copy, stored after the
//! original, is processed in its conversation's partition; replay skips
//! the originals that have copies ([`REKEYED_FROM`]).

use std::sync::Arc;

use im_events::ids::direct_members;
use im_events::inbound::{Inbound, Limits};
use im_events::partition::partition_of;
use im_events::subjects::{accepted_batch_subject, accepted_subject};
use im_events::{
    message_id_for, parse_inbound, rfc3339_ms, Accepted, AcceptedBatch, AcceptedItem, Command,
    ConversationKind, Envelope, ErrorCode, EventError, InboundMessage,
};
use im_runtime::consumer::Identity;
use im_runtime::publish::{publish_all, reply, reply_subject, Outgoing};
use im_runtime::{BatchHandler, Claim, HandlerError, Incoming, Outcome};

pub const FUNCTION: &str = "ingest";

mod decide;
pub use decide::*;

pub struct Ingest {
    pub js: async_nats::jetstream::Context,
    pub config: Config,
}

impl BatchHandler for Ingest {
    async fn handle(
        &self,
        claim: &Claim,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut items = Vec::new();
        let mut copies = Vec::new();
        // Until the batch is published.
        let mut spans = im_runtime::trace::Spans::default();
        for message in &batch {
            match route(message, &self.config) {
                Ok(Route::Rekey { subject }) => {
                    copies.push(rekeyed(message, subject));
                    outcomes.push(Outcome::Done);
                }
                Ok(Route::Accept {
                    subject,
                    event: accepted,
                }) => {
                    let partition =
                        im_events::subjects::partition_of_subject(&subject).unwrap_or_default();
                    items.push((
                        partition,
                        AcceptedItem {
                            event: {
                                let trace = spans.event(
                                    FUNCTION,
                                    accepted.trace().as_ref(),
                                    Some(claim.partition),
                                    None,
                                    batch.len(),
                                );
                                accepted.with_trace(trace)
                            },
                            reply_to: reply_subject(&message.headers).map(str::to_string),
                        },
                    ));
                    outcomes.push(Outcome::Done);
                }
                Err(error) => {
                    if let Some(subject) = reply_subject(&message.headers) {
                        reply(&self.js.client(), subject, &refusal(&error)).await;
                    }
                    outcomes.push(Outcome::Reject {
                        error,
                        identity: identity_of(message),
                    })
                }
            }
        }
        // One connection publishes in order, so a conversation's events keep
        // the order they had in IM_INGEST.
        let mut outgoing = envelopes(items).map_err(|e| HandlerError::Transient(e.to_string()))?;
        if !copies.is_empty() {
            metrics::counter!("im_ingest_rekeyed_total").increment(copies.len() as u64);
        }
        outgoing.extend(copies);
        publish_all(&self.js, outgoing)
            .await
            .map_err(HandlerError::Transient)?;
        drop(spans);
        Ok(outcomes)
    }
}

pub async fn run(
    client: async_nats::Client,
    config: Config,
    instance: String,
    lease_ttl: std::time::Duration,
    shutdown: im_runtime::Shutdown,
) -> anyhow::Result<()> {
    let handler = Arc::new(Ingest {
        js: async_nats::jetstream::new(client.clone()),
        config,
    });
    im_runtime::run_function(client, FUNCTION, instance, lease_ttl, handler, shutdown).await
}

#[cfg(test)]
mod tests;
