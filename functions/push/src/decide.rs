//! The pure core of `push`: the frame a device gets for a sync item.

use super::*;

/// The frame a device gets for a sync item (pure); without a `sync_seq` for
/// the fast path (the message pushed from its commit, before unread has
/// placed it in the user's sync log).
pub fn frame_for(sync_seq: Option<u64>, item: &Value) -> Option<Value> {
    let op = match item["type"].as_str()? {
        "message" => "message",
        "edit" => "edited",
        "recall" => "recalled",
        "read" => "read",
        "reaction" => "reacted",
        "receipt" => "receipt",
        _ => return None,
    };
    let mut frame = item.clone();
    let object = frame.as_object_mut()?;
    object.remove("type");
    object.remove("recipients");
    object.insert("op".into(), json!(op));
    if let Some(sync_seq) = sync_seq {
        object.insert("sync_seq".into(), json!(sync_seq));
    }
    Some(frame)
}
