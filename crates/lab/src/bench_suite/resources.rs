//! Resource scenarios: memory per idle connection, recovery after a kill.

use super::*;

pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `count` idle connections on the gateway, from several 127.0.0.x source
/// addresses: resident memory per connection and connect rate.
pub async fn connections(system: &mut System, count: usize) -> crate::Result<Value> {
    let pid = gateway_pid(system).ok_or_else(|| crate::failed!("no gateway pid"))?;
    let before = rss_kib(pid).unwrap_or(0);
    let run = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(count);
    let port = system.gateway_port();
    for chunk in (0..count).collect::<Vec<_>>().chunks(200) {
        let attempts = chunk.iter().map(|n| {
            let n = *n;
            async move {
                let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (n / 20_000) as u8);
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind((source, 0).into())?;
                let stream = socket.connect(([127, 0, 0, 1], port).into()).await?;
                let token = im_gateway::auth::mint_device(
                    &SECRET,
                    &format!("idle{run}u{n}"),
                    "d",
                    chrono::Utc::now().timestamp(),
                    7200,
                );
                let url = format!("ws://127.0.0.1:{port}/v1/ws?token={token}");
                let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
                Ok::<_, crate::Error>(ws)
            }
        });
        for result in futures::future::join_all(attempts).await {
            sockets.push(result?);
        }
        eprint!("\rconnections: {}/{count}", sockets.len());
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid).unwrap_or(0);
    drop(sockets);
    Ok(json!({
        "connections": count, "connect_per_sec": (count as f64 / connect_secs).round(),
        "gateway_rss_before_kib": before, "gateway_rss_after_kib": after,
        "kib_per_connection": ((after.saturating_sub(before)) as f64 / count.max(1) as f64 * 100.0).round() / 100.0,
    }))
}

/// A device offline for `messages` messages: time to sync them all.
pub async fn recovery(system: &System, messages: usize) -> crate::Result<Value> {
    let js = system.js().await?;
    let run = chrono::Utc::now().timestamp_millis();
    let (from, to) = (format!("r{run}a"), format!("r{run}b"));
    let conversation = im_events::ids::direct_conversation_id(&from, &to);
    let mut pending = std::collections::VecDeque::new();
    for n in 0..messages {
        let body = send_event(&format!("rec-{run}-{n}"), &conversation, &from);
        pending.push_back(
            js.publish(
                im_events::subjects::keyed_ingest_subject("im.message.send", &conversation),
                body.into(),
            )
            .await?,
        );
        if pending.len() >= 256 {
            pending.pop_front().expect("non-empty").await?;
        }
    }
    for future in pending {
        future.await?;
    }
    let users = im_store::sqlite::users_in(&system.data_dir, None)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let head = im_store::UserStore::last_sync_seq(&users, &to)?;
        eprint!("\rrecovery: {head}/{messages} committed for the offline device");
        if head as usize >= messages || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!();
    let mut socket = device(system.gateway_port(), &to).await?;
    let started = Instant::now();
    let mut after = 0u64;
    let mut received = 0usize;
    loop {
        socket
            .send(Message::Text(
                json!({"op": "sync", "after": after, "limit": 1000})
                    .to_string()
                    .into(),
            ))
            .await?;
        let page = loop {
            let Some(Ok(Message::Text(text))) = socket.next().await else {
                crate::bail_failed!("connection ended during sync")
            };
            let value: Value = serde_json::from_str(&text)?;
            if value["op"] == "sync_result" {
                break value;
            }
        };
        received += page["items"].as_array().map(Vec::len).unwrap_or(0);
        after = page["next"].as_u64().unwrap_or(after);
        if page["has_more"] != json!(true) {
            break;
        }
    }
    Ok(
        json!({"messages": messages, "received": received, "sync_seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0}),
    )
}
