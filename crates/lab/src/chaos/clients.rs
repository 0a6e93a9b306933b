//! The chaos run's clients: load devices that send, resend and reconnect,
//! offline devices that register for pushes, and the read-back for the
//! verifier.

use super::*;

/// Everything the clients saw, and when each send first went out (for
/// resends).
#[derive(Default)]
pub(super) struct Book {
    pub(super) ledger: verify::Ledger,
    pub(super) first_sent: HashMap<String, Instant>,
}

/// The conversations of online user `c<user>`: the group, a direct one with
/// its partner, and one with `o<user>` if that offline user exists.
pub(super) fn conversations_of(user: usize, users: usize, offline_users: usize) -> Vec<String> {
    let partner = if user.is_multiple_of(2) {
        user + 1
    } else {
        user - 1
    };
    let mut list = vec!["g:chaos".to_string()];
    if partner < users {
        list.push(im_events::ids::direct_conversation_id(
            &format!("c{user}"),
            &format!("c{partner}"),
        ));
    }
    if user < offline_users {
        list.push(offline_direct(user));
    }
    list
}

/// The direct conversation of offline user `o<n>` with `c<n>`.
pub(super) fn offline_direct(n: usize) -> String {
    im_events::ids::direct_conversation_id(&format!("c{n}"), &format!("o{n}"))
}

pub(super) use crate::ws::Socket;

pub(super) async fn connect(
    ports: &[u16],
    user: &str,
    device: &str,
    attempt: usize,
) -> Option<Socket> {
    let token =
        im_gateway::auth::mint_device(&SECRET, user, device, chrono::Utc::now().timestamp(), 7200);
    let port = ports[attempt % ports.len()];
    let url = format!("ws://127.0.0.1:{port}/v1/ws?token={token}");
    tokio::time::timeout(Duration::from_secs(3), crate::ws::connect(&url))
        .await
        .ok()?
        .ok()
}

/// What every load device shares.
#[derive(Clone)]
pub(super) struct Load {
    pub(super) users: usize,
    pub(super) offline_users: usize,
    pub(super) per_second: f64,
    pub(super) ports: Vec<u16>,
    pub(super) book: Arc<Mutex<Book>>,
    pub(super) sending: Arc<std::sync::atomic::AtomicBool>,
    pub(super) done: Arc<std::sync::atomic::AtomicBool>,
}

/// One user's device: sends at its rate while `sending`, resends what is
/// not acked after a while (same client_msg_id: idempotent), reconnects to
/// the other gateway when its connection dies.
pub(super) async fn device(index: usize, load: Load) {
    let Load {
        users,
        offline_users,
        per_second,
        ports,
        book,
        sending,
        done,
    } = load;
    let user = format!("c{index}");
    let conversations = conversations_of(index, users, offline_users);
    let mut counter = 0u64;
    let mut attempt = index;
    let interval = Duration::from_secs_f64(1.0 / per_second.max(0.01));
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(socket) = connect(&ports, &user, "d", attempt).await else {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (mut sink, mut stream) = socket.split();
        let reader_book = book.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let mut book = reader_book.lock().unwrap_or_else(|p| p.into_inner());
                let ledger = &mut book.ledger;
                match frame["op"].as_str() {
                    Some("ack") => {
                        let id = frame["client_msg_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        let message_id =
                            frame["message_id"].as_str().unwrap_or_default().to_string();
                        ledger
                            .acked
                            .insert(id, (message_id, frame["seq"].as_u64().unwrap_or(0)));
                    }
                    Some("error") => {
                        let code = frame["code"].as_str().unwrap_or("?").to_string();
                        *ledger.errors.entry(code.clone()).or_default() += 1;
                        let sample = format!(
                            "{} ({}; {})",
                            frame["message"].as_str().unwrap_or_default(),
                            frame["client_msg_id"]
                                .as_str()
                                .unwrap_or("no client_msg_id"),
                            chrono::Utc::now().format("%H:%M:%S%.3f")
                        );
                        let samples = ledger.error_samples.entry(code).or_default();
                        if samples.len() < 8 {
                            samples.push(sample);
                        }
                    }
                    _ => {}
                }
            }
        });
        let mut last_resend = Instant::now();
        let mut healthy = true;
        while healthy && !done.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(interval).await;
            if reader.is_finished() {
                break;
            }
            let mut frames = Vec::new();
            if sending.load(std::sync::atomic::Ordering::Relaxed) {
                counter += 1;
                let id = format!("{user}-{counter}");
                let conversation = conversations[(counter as usize) % conversations.len()].clone();
                let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
                book.ledger
                    .sent
                    .insert(id.clone(), (conversation.clone(), user.clone()));
                book.first_sent.insert(id.clone(), Instant::now());
                drop(book);
                frames.push(json!({"op": "send", "conversation_id": conversation, "client_msg_id": id, "kind": "text", "body": {"text": format!("chaos {counter}")}}));
            }
            if last_resend.elapsed() > Duration::from_secs(3) {
                last_resend = Instant::now();
                let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
                let overdue: Vec<(String, String)> = book
                    .ledger
                    .sent
                    .iter()
                    .filter(|(id, (_, sender))| {
                        *sender == user
                            && !book.ledger.acked.contains_key(*id)
                            && book
                                .first_sent
                                .get(*id)
                                .is_some_and(|at| at.elapsed() > Duration::from_secs(4))
                    })
                    .map(|(id, (conversation, _))| (id.clone(), conversation.clone()))
                    .take(20)
                    .collect();
                book.ledger.resends += overdue.len() as u64;
                for (id, conversation) in overdue {
                    frames.push(json!({"op": "send", "conversation_id": conversation, "client_msg_id": id, "kind": "text", "body": {"text": "chaos resend"}}));
                }
            }
            if frames.is_empty() {
                frames.push(json!({"op": "ping"}));
            }
            for frame in frames {
                if sink
                    .send(Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    healthy = false;
                    break;
                }
            }
        }
        reader.abort();
        attempt += 1;
    }
}

/// The one device of each offline user.
pub(super) const OFFLINE_DEVICE: &str = "phone";

/// Register the offline user's device for webhook pushes (over the
/// WebSocket, as an app would), then disconnect for good.
pub(super) async fn register_push(ports: &[u16], user: &str) -> crate::Result<()> {
    for attempt in 0..20 {
        let Some(mut socket) = connect(ports, user, OFFLINE_DEVICE, attempt).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let frame =
            json!({"op": "register_push", "provider": "webhook", "token": format!("hook-{user}")});
        socket.send(Message::Text(frame.to_string().into())).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Ok(Some(Ok(Message::Text(text)))) =
                tokio::time::timeout(Duration::from_secs(10), socket.next()).await
            else {
                break;
            };
            let value: Value = serde_json::from_str(&text)?;
            if value["op"] == "push_registered" {
                let _ = socket.close(None).await;
                return Ok(());
            }
            // Retryable (the token bucket may not exist yet while the
            // system starts): register again, as an app would.
            if value["op"] == "error" && value["code"] == "unavailable" {
                tokio::time::sleep(Duration::from_millis(300)).await;
                break;
            }
            if value["op"] == "error" {
                crate::bail_failed!("registering {user}'s push token: {value}");
            }
        }
    }
    crate::bail_failed!("could not register {user}'s push token")
}

/// A device's view for the verifier: its whole sync log and conversation list.
pub(super) async fn read_user(ports: &[u16], user: &str) -> crate::Result<(Vec<Value>, Value)> {
    let mut socket = None;
    for attempt in 0..20 {
        socket = connect(ports, user, "d", attempt).await;
        if socket.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut socket = socket.ok_or_else(|| crate::failed!("no gateway accepts {user}"))?;
    async fn ask(socket: &mut Socket, frame: Value, op: &str) -> crate::Result<Value> {
        socket.send(Message::Text(frame.to_string().into())).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let next = tokio::time::timeout(Duration::from_secs(20), socket.next()).await?;
            let Some(Ok(Message::Text(text))) = next else {
                crate::bail_failed!("connection ended");
            };
            let value: Value = serde_json::from_str(&text)?;
            if value["op"] == op {
                return Ok(value);
            }
        }
        crate::bail_failed!("no {op}")
    }
    let mut items = Vec::new();
    let mut after = 0;
    loop {
        let page = ask(
            &mut socket,
            json!({"op": "sync", "after": after, "limit": 500}),
            "sync_result",
        )
        .await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        after = page["next"].as_u64().unwrap_or(after);
        if page["has_more"] != json!(true) {
            break;
        }
    }
    let conversations = ask(
        &mut socket,
        json!({"op": "conversations"}),
        "conversations_result",
    )
    .await?;
    Ok((items, conversations))
}
