//! Latency scenarios: send → ack and send → push at a fixed rate, fan-out
//! to a large group.

use super::*;

pub async fn latency(
    system: &System,
    rate: f64,
    pairs: usize,
    seconds: u64,
) -> crate::Result<Value> {
    let pairs = pairs.max(1);
    let run = chrono::Utc::now().timestamp_millis();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let acks: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let pushes: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut sinks = Vec::new();
    let mut tasks = Vec::new();
    for pair in 0..pairs {
        let (from, to) = (format!("l{run}s{pair}"), format!("l{run}r{pair}"));
        let conversation = im_events::ids::direct_conversation_id(&from, &to);
        let (sink, mut ack_stream) = device(system.gateway_port(), &from).await?.split();
        let (_, mut push_stream) = device(system.gateway_port(), &to).await?.split();
        let (sent_a, acks_a) = (sent.clone(), acks.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = ack_stream.next().await {
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if frame["op"] == "ack" {
                    if let Some(at) = sent_a
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(frame["client_msg_id"].as_str().unwrap_or_default())
                    {
                        acks_a
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(at.elapsed());
                    }
                }
            }
        }));
        let (sent_p, pushes_p) = (sent.clone(), pushes.clone());
        tasks.push(tokio::spawn(async move {
            // The first frame of each message counts (the fast path's; the
            // one with its sync_seq follows).
            let mut seen = std::collections::HashSet::new();
            while let Some(Ok(Message::Text(text))) = push_stream.next().await {
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if frame["op"] == "message"
                    && seen.insert(frame["message_id"].as_str().unwrap_or_default().to_string())
                {
                    if let Some(at) = sent_p
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(frame["body"]["id"].as_str().unwrap_or_default())
                    {
                        pushes_p
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(at.elapsed());
                    }
                }
            }
        }));
        sinks.push((sink, conversation));
    }
    // Offline recipients: nobody connects as them; their sync log is read
    // from the store.
    let offline: Vec<(String, String)> = (0..3)
        .map(|n| {
            let (from, to) = (format!("l{run}s{n}"), format!("l{run}o{n}"));
            (im_events::ids::direct_conversation_id(&from, &to), to)
        })
        .collect();
    let visible: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (sent, visible, watching, data_dir) = (
            sent.clone(),
            visible.clone(),
            watching.clone(),
            system.data_dir.clone(),
        );
        let users: Vec<String> = offline.iter().map(|(_, u)| u.clone()).collect();
        tokio::task::spawn_blocking(move || {
            let Ok(store) = im_store::sqlite::users_in(&data_dir, None) else {
                return;
            };
            let mut cursors: HashMap<String, u64> = HashMap::new();
            while watching.load(Ordering::Relaxed) {
                for user in &users {
                    let after = cursors.get(user).copied().unwrap_or(0);
                    let Ok(items) = im_store::UserStore::sync_items(&store, user, after, 100)
                    else {
                        continue;
                    };
                    for item in items {
                        cursors.insert(user.clone(), item.sync_seq);
                        let id = item.item.message().and_then(|m| m.body["id"].as_str());
                        if let Some(at) = id.and_then(|id| {
                            sent.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get(id)
                                .copied()
                        }) {
                            visible
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(at.elapsed());
                        }
                    }
                }
                // Every 2 ms: finer polling made this watcher (the load
                // client, not the system) one of the busiest processes.
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let total = (rate * seconds as f64) as usize;
    let cpu_before = cpu_sample(system);
    let mut next = Instant::now();
    for n in 0..total {
        let id = format!("lat{n}");
        let to_offline = n % 10 == 9;
        let slot = n % pairs;
        let conversation = if to_offline {
            offline[n % offline.len()].0.clone()
        } else {
            sinks[slot].1.clone()
        };
        let sink = if to_offline {
            &mut sinks[n % offline.len()].0
        } else {
            &mut sinks[slot].0
        };
        let frame = json!({"op": "send", "conversation_id": conversation, "client_msg_id": id, "kind": "text", "body": {"text": "bench", "id": id}});
        sent.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Instant::now());
        sink.send(Message::Text(frame.to_string().into())).await?;
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_after = cpu_sample(system);
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.await;
    for task in tasks {
        task.abort();
    }
    let take = |v: &Arc<Mutex<Vec<Duration>>>| {
        std::mem::take(&mut *v.lock().unwrap_or_else(|p| p.into_inner()))
    };
    let mut report = json!({
        "rate_per_sec": rate, "pairs": pairs, "seconds": seconds, "sent": total,
        "send_to_ack_ms": quantiles(take(&acks)),
        "send_to_push_ms": quantiles(take(&pushes)),
        "send_to_offline_sync_ms": quantiles(take(&visible)),
    });
    merge(
        &mut report,
        cpu_per_message(&cpu_before, &cpu_after, total as u64),
    );
    Ok(report)
}

/// A group of `members` with `online` of them connected: send → the last
/// online member's push, and the stream writes each message costs, here and
/// for a group below the read-diffusion threshold.
pub async fn fanout(
    system: &System,
    members: usize,
    online: usize,
    messages: usize,
) -> crate::Result<Value> {
    let js = system.js().await?;
    let run = chrono::Utc::now().timestamp_millis();
    let member = |n: usize| format!("f{run}m{n}");
    let sender = format!("f{run}sender");
    let create = |id: &str, conversation: &str, users: Vec<String>, kind: &str| {
        let data = if kind == "create" {
            json!({"conversation_id": conversation, "kind": "group", "members": users})
        } else {
            json!({"conversation_id": conversation, "members": users})
        };
        let event_type = if kind == "create" {
            "im.conversation.create"
        } else {
            "im.conversation.members.add"
        };
        (im_events::subjects::ingest_subject_for(event_type, &data), json!({"specversion": "1.0", "id": id, "source": "urn:bench", "type": event_type, "datacontenttype": "application/json", "data": data}).to_string())
    };
    let big = format!("g:fan{run}");
    let small = format!("g:fansmall{run}");
    let mut all: Vec<String> = (0..members.saturating_sub(1)).map(member).collect();
    all.insert(0, sender.clone());
    for (index, chunk) in all.chunks(2000).enumerate() {
        let (subject, body) = create(
            &format!("fan-{run}-{index}"),
            &big,
            chunk.to_vec(),
            if index == 0 { "create" } else { "add" },
        );
        js.publish(subject, body.into()).await?.await?;
    }
    let small_members: Vec<String> = all.iter().take(400).cloned().collect();
    let (subject, body) = create(&format!("fansmall-{run}"), &small, small_members, "create");
    js.publish(subject, body.into()).await?.await?;
    // Online members, each on its own connection.
    let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let mut readers = Vec::new();
    eprint!("fanout: connecting {online} members");
    for n in 0..online {
        let (_, mut stream) = device(system.gateway_port(), &member(n)).await?.split();
        let arrivals = arrivals.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = stream.next().await {
                if let Some(at) = text.as_str().find("\"fanout-probe-") {
                    let id: String = text.as_str()[at + 1..]
                        .chars()
                        .take_while(|c| *c != '"')
                        .collect();
                    arrivals
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(id)
                        .or_default()
                        .push(Instant::now());
                }
            }
        }));
    }
    eprintln!();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut socket_sink, _) = device(system.gateway_port(), &sender).await?.split();
    let deliveries = |js: jetstream::Context| async move {
        let mut total = 0;
        for name in im_runtime::topology::pipeline_streams(&js).await? {
            if im_runtime::topology::base_name(&name) == "IM_DELIVERY" {
                total += js.get_stream(name).await?.info().await?.state.messages;
            }
        }
        Ok::<u64, crate::Error>(total)
    };
    let mut sent_at = HashMap::new();
    let before = deliveries(js.clone()).await?;
    for n in 0..messages {
        let id = format!("fanout-probe-{n}");
        let frame = json!({"op": "send", "conversation_id": big, "client_msg_id": id, "kind": "text", "body": {"text": id}});
        sent_at.insert(id, Instant::now());
        socket_sink
            .send(Message::Text(frame.to_string().into()))
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let big_writes = (deliveries(js.clone()).await? - before) as f64 / messages.max(1) as f64;
    let before = deliveries(js.clone()).await?;
    for n in 0..5 {
        let frame = json!({"op": "send", "conversation_id": small, "client_msg_id": format!("small-{n}"), "kind": "text", "body": {"text": "x"}});
        socket_sink
            .send(Message::Text(frame.to_string().into()))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let small_writes = (deliveries(js.clone()).await? - before) as f64 / 5.0;
    for reader in readers {
        reader.abort();
    }
    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner());
    let mut last = Vec::new();
    let mut reached = Vec::new();
    for (id, at) in &sent_at {
        let got = arrivals.get(id).cloned().unwrap_or_default();
        reached.push(got.len());
        if let Some(latest) = got.iter().max() {
            last.push(latest.duration_since(*at));
        }
    }
    Ok(json!({
        "members": members, "online": online, "messages": messages,
        "online_reached_min": reached.iter().min(), "send_to_last_online_push_ms": quantiles(last),
        "read_diffusion": {"delivery_writes_per_message": big_writes, "sync_rows_per_message": 1},
        "write_diffusion_400": {"delivery_writes_per_message": small_writes, "sync_rows_per_message": 400},
    }))
}
