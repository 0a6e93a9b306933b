//! The broker's own baseline, and the pipeline's throughput against it.

use super::*;

/// The broker's own limits on the same server: JetStream persisted publish
/// rate (async acks, file storage, same sync policy) and core pub/sub.
pub async fn baseline(system: &System, seconds: u64) -> crate::Result<Value> {
    let js = system.js().await?;
    let payload = bytes::Bytes::from(send_event("baseline", "dm:a:b", "a"));
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: "BENCH_BASELINE".into(),
            subjects: vec!["bench.js".into()],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut acked = 0u64;
    let mut pending = std::collections::VecDeque::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        pending.push_back(js.publish("bench.js", payload.clone()).await?);
        if pending.len() >= 256 {
            pending.pop_front().expect("non-empty").await?;
            acked += 1;
        }
    }
    for future in pending {
        future.await?;
        acked += 1;
    }
    let js_rate = acked as f64 / started.elapsed().as_secs_f64();
    drop(stream);
    let _ = js.delete_stream("BENCH_BASELINE").await;
    // Core NATS: one publisher, one subscriber.
    let client = system.client("imctl-bench-core").await?;
    let mut subscription = client.subscribe("bench.core").await?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        while subscription.next().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    let mut published = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..100 {
            client.publish("bench.core", payload.clone()).await?;
        }
        published += 100;
        client.flush().await?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let core_rate = received.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    reader.abort();
    Ok(
        json!({"payload_bytes": payload.len(), "jetstream_publish_per_sec": js_rate.round(), "core_pubsub_per_sec": core_rate.round()}),
    )
}

/// 1:1 at saturation: pairs of real WebSocket clients, each sender keeping
/// `window` sends unacknowledged, its partner online.
pub async fn throughput(
    system: &System,
    pairs: usize,
    window: usize,
    seconds: u64,
) -> crate::Result<Value> {
    let js = system.js().await?;
    let before = stream_messages(&js).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let pushed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = chrono::Utc::now().timestamp_millis();
    let mut tasks = Vec::new();
    for pair in 0..pairs {
        let (from, to) = (format!("t{run}s{pair}"), format!("t{run}r{pair}"));
        let conversation = im_events::ids::direct_conversation_id(&from, &to);
        let sender = device(system.gateway_port(), &from).await?;
        let receiver = device(system.gateway_port(), &to).await?;
        let (_, mut incoming) = receiver.split();
        let counter = pushed.clone();
        tasks.push(tokio::spawn(async move {
            // Delivered: a message in the recipient's sync log and pushed
            // with its sync_seq (the fast path's earlier frame is not counted).
            while let Some(Ok(Message::Text(text))) = incoming.next().await {
                if text.as_str().contains("\"op\":\"message\"")
                    && text.as_str().contains("\"sync_seq\"")
                {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        let (mut sink, mut acks) = sender.split();
        let permits = Arc::new(tokio::sync::Semaphore::new(window));
        let (release, counted, failed) = (permits.clone(), acked.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = acks.next().await {
                if text.as_str().contains("\"op\":\"ack\"") {
                    counted.fetch_add(1, Ordering::Relaxed);
                    release.add_permits(1);
                } else if text.as_str().contains("\"op\":\"error\"") {
                    failed.fetch_add(1, Ordering::Relaxed);
                    release.add_permits(1);
                }
            }
        }));
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(permit) = permits.acquire().await else { break };
                permit.forget();
                n += 1;
                let frame = json!({"op": "send", "conversation_id": conversation, "client_msg_id": format!("{pair}-{n}"), "kind": "text", "body": {"text": "benchmark message of typical length, about sixty characters"}});
                if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acked_at_start, pushed_at_start) = (
        acked.load(Ordering::Relaxed),
        pushed.load(Ordering::Relaxed),
    );
    let cpu_before = cpu_sample(system);
    let started = Instant::now();
    for second in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprint!(
            "\rthroughput: {}s/{seconds}s, {} acked",
            second + 1,
            acked.load(Ordering::Relaxed)
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_sample(system);
    let backlog = consumer_backlog(&js).await;
    let (acked_n, pushed_n) = (
        acked.load(Ordering::Relaxed) - acked_at_start,
        pushed.load(Ordering::Relaxed) - pushed_at_start,
    );
    let cpu = cpu_per_message(&cpu_before, &cpu_after, acked_n);
    stop.store(true, Ordering::Relaxed);
    eprintln!();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for task in tasks {
        task.abort();
    }
    let after = stream_messages(&js).await?;
    let total_acked = acked.load(Ordering::Relaxed).max(1);
    let mut report = json!({
        "pairs": pairs, "window": window, "seconds": seconds,
        "acked_per_sec": (acked_n as f64 / elapsed).round(),
        "delivered_per_sec": (pushed_n as f64 / elapsed).round(),
        "errors": errors.load(Ordering::Relaxed),
        "stream_writes_per_message": ((after - before) as f64 / total_acked as f64 * 100.0).round() / 100.0,
        "backlog_at_end_by_function": backlog,
    });
    merge(&mut report, cpu);
    Ok(report)
}

/// Messages waiting per function (summed over its partitions): where a
/// saturated pipeline queues up.
pub(super) async fn consumer_backlog(js: &jetstream::Context) -> Value {
    let mut backlog: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for name in im_runtime::topology::pipeline_streams(js)
        .await
        .unwrap_or_default()
    {
        let Ok(stream) = js.get_stream(name).await else {
            continue;
        };
        let mut consumers = stream.consumers();
        while let Some(Ok(info)) = consumers.next().await {
            let function = info.name.split('-').next().unwrap_or_default().to_string();
            *backlog.entry(function).or_default() += info.num_pending + info.num_ack_pending as u64;
        }
    }
    json!(backlog)
}

/// Let the pipeline drain what an earlier scenario left, so figures do
/// not carry over.
pub(super) async fn drain(system: &System) -> crate::Result<()> {
    let js = system.js().await?;
    eprintln!("bench: waiting for the pipeline to drain");
    if let Err(busy) = crate::quiesce::quiesce(&js, Duration::from_secs(300)).await {
        eprintln!(
            "bench: the pipeline did not drain in 300 s ({}); figures that follow include its backlog",
            busy.join(", ")
        );
    }
    Ok(())
}

/// Latency at a fixed offered rate: send → ack and send → push (online
/// partner), and send → visible in the sync log of an offline recipient.
pub(super) fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// Raw JetStream publish → ack latency at a fixed rate on the same server
/// (one stream, the same payload and sync policy): what one persisted hop
/// costs, next to the pipeline's send → push.
pub async fn publish_latency(system: &System, rate: f64, seconds: u64) -> crate::Result<Value> {
    let js = system.js().await?;
    let payload = bytes::Bytes::from(send_event("raw", "dm:a:b", "a"));
    let name = format!("BENCH_LATENCY_{}", chrono::Utc::now().timestamp_millis());
    js.get_or_create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("bench.latency.{name}")],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let subject = format!("bench.latency.{name}");
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let total = (rate * seconds as f64) as usize;
    let mut next = Instant::now();
    let mut waits = Vec::with_capacity(total);
    for _ in 0..total {
        let at = Instant::now();
        let ack = js.publish(subject.clone(), payload.clone()).await?;
        let samples = samples.clone();
        waits.push(tokio::spawn(async move {
            if ack.await.is_ok() {
                samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(at.elapsed());
            }
        }));
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    for wait in waits {
        let _ = wait.await;
    }
    let _ = js.delete_stream(&name).await;
    let taken = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(json!({"rate_per_sec": rate, "publish_to_ack_ms": quantiles(taken)}))
}
