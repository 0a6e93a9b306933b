//! Waiting for the pipeline to be idle (bench between scenarios, chaos
//! before it verifies).

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::TryStreamExt;

/// Wait until no consumer has anything pending or unacknowledged.
pub async fn quiesce(js: &jetstream::Context, timeout: Duration) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut calm = 0;
    let mut busy = Vec::new();
    while Instant::now() < deadline {
        busy.clear();
        let streams = match im_runtime::topology::pipeline_streams(js).await {
            Ok(streams) => streams,
            Err(error) => {
                busy.push(error.to_string());
                Vec::new()
            }
        };
        for stream in streams {
            let Ok(stream) = js.get_stream(&stream).await else {
                busy.push(format!("{stream}: no answer"));
                continue;
            };
            // Names from the meta layer, then each consumer's own state: a
            // listing (CONSUMER.LIST) may leave out consumers whose leader
            // did not answer in time, which would read as "settled".
            let names: Result<Vec<String>, _> = stream.consumer_names().try_collect().await;
            let names = match names {
                Ok(names) => names,
                Err(error) => {
                    busy.push(format!("{}: {error}", stream.cached_info().config.name));
                    continue;
                }
            };
            for name in names {
                match stream.consumer_info(&name).await {
                    Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {}
                    Ok(info) => busy.push(format!(
                        "{} ({} pending, {} unacked)",
                        info.name, info.num_pending, info.num_ack_pending
                    )),
                    Err(error) => busy.push(format!("{name}: {error}")),
                }
            }
        }
        calm = if busy.is_empty() { calm + 1 } else { 0 };
        if calm >= 4 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(busy)
}
