//! The CloudEvents distributed-tracing extension: `traceparent` (W3C Trace
//! Context) and `tracestate`, carried by every event from the publisher to
//! the push, so that one trace follows a message through every stage.

use serde::{Deserialize, Serialize};

/// A trace an event belongs to: the W3C `traceparent` of the span that
/// caused it, and the vendors' `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// Longest `tracestate` kept (W3C: 32 members of at most 256 bytes; a
/// publisher's state needs no more than this here).
pub const MAX_TRACESTATE: usize = 512;

impl Trace {
    /// The trace named by a publisher's attributes, if `traceparent` is
    /// valid. An invalid one is dropped, not refused: W3C Trace Context
    /// says a receiver then starts a new trace, and an event is never lost
    /// over its tracing.
    pub fn parse(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Trace> {
        let traceparent = traceparent?.trim();
        if !valid_traceparent(traceparent) {
            return None;
        }
        Some(Trace {
            traceparent: traceparent.to_string(),
            tracestate: tracestate
                .map(str::trim)
                .filter(|state| {
                    !state.is_empty()
                        && state.len() <= MAX_TRACESTATE
                        && state.chars().all(|c| (' '..='~').contains(&c))
                })
                .map(str::to_string),
        })
    }
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, lowercase, ids
/// not all zero (version 00; a later version's first four fields read
/// the same, so they are accepted when longer).
pub fn valid_traceparent(text: &str) -> bool {
    let fields: Vec<&str> = text.split('-').collect();
    let hex = |field: &str, len: usize| {
        field.len() == len
            && field
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |field: &str| field.bytes().any(|b| b != b'0');
    match fields.as_slice() {
        [version, trace, span, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && nonzero(trace)
                && hex(span, 16)
                && nonzero(span)
                && hex(flags, 2)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
