//! Frames for the devices one gateway holds, several users' in one NATS
//! message on `im.gw.<gateway>.frames`.
//!
//! Push (and dedupe's fast path) used to publish one message per user and
//! frame on `im.gw.<gateway>.user.<user>`: at a moderate rate most of the
//! broker's work was those messages' reads and writes. A batch's frames
//! for one gateway now travel together; each frame stays the JSON text it
//! goes to the socket as (a [`RawValue`], never parsed into a tree).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What a gateway reads from its frames subject.
#[derive(Debug, Deserialize)]
pub struct GatewayFrames<'a> {
    #[serde(borrow)]
    pub frames: Vec<UsersFrame<'a>>,
}

/// One frame for the devices of several users on that gateway (a large
/// group's message for its online members is one entry, not one each).
#[derive(Debug, Deserialize)]
pub struct UsersFrame<'a> {
    #[serde(borrow)]
    pub users: Vec<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub frame: &'a RawValue,
}

#[derive(Serialize)]
struct GatewayFramesOut<'a> {
    frames: Vec<UsersFrameOut<'a>>,
}

#[derive(Serialize)]
struct UsersFrameOut<'a> {
    users: &'a [String],
    frame: &'a RawValue,
}

/// The payload carrying `frames` (users, frame as JSON text). A frame that
/// is not JSON is an error naming it.
pub fn gateway_frames_payload(frames: &[(&[String], &str)]) -> Result<Vec<u8>, serde_json::Error> {
    let raw: Vec<&RawValue> = frames
        .iter()
        .map(|(_, frame)| serde_json::from_str::<&RawValue>(frame))
        .collect::<Result<_, _>>()?;
    serde_json::to_vec(&GatewayFramesOut {
        frames: frames
            .iter()
            .zip(raw)
            .map(|((users, _), frame)| UsersFrameOut { users, frame })
            .collect(),
    })
}

#[cfg(test)]
mod tests;
