//! `imctl chat`: an interactive terminal client over the gateway's WebSocket.
//!
//! Type a line to send it to the open conversation. Commands:
//! `/list` conversations with unread counts, `/open ID` open one (shows its
//! recent history, marks it read, and follows the other members' presence),
//! `/history` older messages, `/read` mark the open conversation read,
//! `/reply SEQ TEXT`, `/react SEQ EMOJI`, `/unreact SEQ EMOJI`, `/receipts`
//! who has received and read what, `/presence USER…`, `/block USER`,
//! `/unblock USER`, `/quit`. Incoming messages print live, and the open
//! conversation is marked read as they are shown.

use clap::Args;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: String,
    #[arg(long)]
    pub user: String,
    #[arg(long, default_value = "terminal")]
    pub device: String,
    /// A token; by default one is minted with --secret.
    #[arg(long)]
    pub token: Option<String>,
    /// The gateway's JWT secret; by default the one `imctl up` made in
    /// --data-dir.
    #[arg(long, env = "IM_JWT_SECRET")]
    pub secret: Option<String>,
    /// Data directory whose `credentials/jwt-secret` to use.
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,
    /// Open this conversation at start.
    #[arg(long)]
    pub open: Option<String>,
}

fn text_of(message: &Value) -> String {
    if message["recalled_at"].is_string() {
        return "(recalled)".into();
    }
    let mut text = match message["body"]["text"].as_str() {
        Some(text) => text.to_string(),
        None => message["body"].to_string(),
    };
    if let Some(seq) = message["reply_to"].as_u64() {
        text = format!("↪#{seq} {text}");
    }
    if let Some(groups) = message["reactions"].as_array() {
        let shown: Vec<String> = groups
            .iter()
            .filter_map(|g| {
                Some(format!(
                    "{} {}",
                    g["emoji"].as_str()?,
                    g["users"].as_array()?.len()
                ))
            })
            .collect();
        if !shown.is_empty() {
            text = format!("{text}  [{}]", shown.join(", "));
        }
    }
    text
}

fn presence_line(entry: &Value) -> Option<String> {
    let user = entry["user_id"].as_str()?;
    Some(if entry["online"] == true {
        format!("{user} is online")
    } else {
        match entry["last_seen"].as_str() {
            Some(at) => format!("{user} is offline (last seen {at})"),
            None => format!("{user} is offline"),
        }
    })
}

/// How a frame reads in the terminal (pure).
/// The messages a session has shown, by id, so each is shown once: a
/// message pushed from its commit arrives first without a `sync_seq`, then
/// again with it once it is in the user's sync log. Bounded: the oldest ids
/// are forgotten first.
#[derive(Default)]
pub struct Shown {
    ids: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl Shown {
    const KEEP: usize = 10_000;

    /// Whether `frame` should be shown: anything but a message this session
    /// has shown already.
    pub fn first_time(&mut self, frame: &Value) -> bool {
        if frame["op"] != "message" {
            return true;
        }
        let Some(id) = frame["message_id"].as_str() else {
            return true;
        };
        if !self.ids.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > Self::KEEP {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

/// The newest unread counts per conversation: an `unread` frame whose
/// `as_of` is below one already shown is older state (a push that lagged
/// behind the answer to a read) and is not shown.
#[derive(Default)]
pub struct Fresh {
    as_of: std::collections::HashMap<String, u64>,
}

impl Fresh {
    pub fn keep(&mut self, frame: &Value) -> bool {
        let (Some(conversation), Some(as_of)) =
            (frame["conversation_id"].as_str(), frame["as_of"].as_u64())
        else {
            return true;
        };
        if frame["op"] != "unread" {
            return true;
        }
        let newest = self.as_of.entry(conversation.to_string()).or_default();
        if as_of < *newest {
            return false;
        }
        *newest = as_of;
        true
    }
}

pub fn render(frame: &Value) -> Option<String> {
    Some(match frame["op"].as_str()? {
        "message" => format!(
            "[{}] {}: {} (#{})",
            frame["conversation_id"].as_str()?,
            frame["sender_id"].as_str()?,
            text_of(frame),
            frame["seq"]
        ),
        "ack" => format!(
            "sent #{} in {}",
            frame["seq"],
            frame["conversation_id"].as_str()?
        ),
        "edited" => format!(
            "[{}] #{} edited: {}",
            frame["conversation_id"].as_str()?,
            frame["seq"],
            text_of(frame)
        ),
        "recalled" => format!(
            "[{}] #{} recalled",
            frame["conversation_id"].as_str()?,
            frame["seq"]
        ),
        "typing" => format!(
            "[{}] {} is typing…",
            frame["conversation_id"].as_str()?,
            frame["user_id"].as_str()?
        ),
        "unread" => format!(
            "unread: {} in {}, {} in all",
            frame["unread"],
            frame["conversation_id"].as_str()?,
            frame["total"]
        ),
        "conversations_result" => {
            let mut lines = vec![format!("{} unread in all", frame["total_unread"])];
            for item in frame["items"].as_array()? {
                lines.push(format!(
                    "  {:<40} {:>4} unread  (last #{})",
                    item["conversation_id"].as_str()?,
                    item["unread"],
                    item["last_seq"]
                ));
            }
            lines.join("\n")
        }
        "reacted" => format!(
            "[{}] {} {} {} on #{}",
            frame["conversation_id"].as_str()?,
            frame["user_id"].as_str()?,
            if frame["removed"] == true {
                "took back"
            } else {
                "reacted"
            },
            frame["emoji"].as_str()?,
            frame["seq"]
        ),
        "receipt" => match (frame["read_seq"].as_u64(), frame["delivered_seq"].as_u64()) {
            (Some(seq), _) => format!(
                "[{}] {} read up to #{seq}",
                frame["conversation_id"].as_str()?,
                frame["user_id"].as_str()?
            ),
            (None, Some(seq)) => format!(
                "[{}] {} received up to #{seq}",
                frame["conversation_id"].as_str()?,
                frame["user_id"].as_str()?
            ),
            _ => return None,
        },
        "receipts_result" => {
            if let Some(counts) = frame["counts"].as_object() {
                format!(
                    "#{}: read by {} and received by {} of {} members",
                    counts["at_seq"], counts["read"], counts["delivered"], counts["members"]
                )
            } else {
                frame["members"]
                    .as_array()?
                    .iter()
                    .map(|m| {
                        format!(
                            "  {:<20} read #{}, received #{}",
                            m["user_id"].as_str().unwrap_or("?"),
                            m["read_seq"],
                            m["delivered_seq"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
        "presence" => presence_line(frame)?,
        "presence_result" => frame["users"]
            .as_array()?
            .iter()
            .filter_map(presence_line)
            .collect::<Vec<_>>()
            .join("\n"),
        "blocked" => format!("blocked {}", frame["user_id"].as_str()?),
        "unblocked" => format!("unblocked {}", frame["user_id"].as_str()?),
        "presence_unsubscribed" | "read" => return None,
        "history_result" => {
            let messages = frame["messages"].as_array()?;
            if messages.is_empty() {
                return Some("(no more history)".into());
            }
            messages
                .iter()
                .map(|m| {
                    format!(
                        "  #{} {}: {}",
                        m["seq"],
                        m["sender_id"].as_str().unwrap_or("?"),
                        text_of(m)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        "error" => format!(
            "error {}: {}",
            frame["code"].as_str()?,
            frame["message"].as_str().unwrap_or_default()
        ),
        "pong" | "sync_result" => return None,
        other => format!("{other}: {frame}"),
    })
}

/// The other member of a direct conversation, whose presence the chat
/// follows once the conversation has a message (before that the two share
/// nothing, and the gateway tells a stranger nothing).
pub fn peer_of(conversation_id: &str, me: &str) -> Option<String> {
    let (a, b) = im_events::ids::direct_members(conversation_id)?;
    Some(if a == me { b } else { a }.to_string())
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let token = match &args.token {
        Some(token) => token.clone(),
        None => im_gateway::auth::mint_device(
            &im_runtime::secrets::resolve(args.secret.as_deref(), &args.data_dir)?,
            &args.user,
            &args.device,
            chrono::Utc::now().timestamp(),
            24 * 3600,
        ),
    };
    let url = format!("ws://{}/v1/ws?token={token}", args.gateway);
    let socket = im_lab::ws::connect(&url).await.map_err(|error| {
        anyhow::anyhow!(
            "cannot connect to ws://{}/v1/ws: {error}; is `imctl up` running?",
            args.gateway
        )
    })?;
    let (mut sink, mut stream) = socket.split();
    println!(
        "connected as {} ({}); /list, /open ID, /history, /read, /reply SEQ TEXT, /react SEQ EMOJI, /unreact SEQ EMOJI, /receipts, /presence USER…, /block USER, /unblock USER, /quit",
        args.user, args.device
    );
    let mut open = args.open.clone();
    let mut oldest: Option<u64> = None;
    let mut newest: u64 = 0;
    let mut read_mark: u64 = 0;
    let mut delivered: u64 = 0;
    let mut counter = 0u64;
    let send = |frame: Value| Message::Text(frame.to_string().into());
    sink.send(send(json!({"op": "conversations"}))).await?;
    if let Some(id) = &open {
        sink.send(send(
            json!({"op": "history", "conversation_id": id, "limit": 20}),
        ))
        .await?;
    }
    let mut following: Option<String> = None;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut shown = Shown::default();
    let mut fresh = Fresh::default();
    let mut ping = tokio::time::interval(std::time::Duration::from_secs(20));
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let line = line.trim().to_string();
                if line.is_empty() {
                    continue;
                }
                let frame = match line.split_once(' ').map(|(c, rest)| (c, rest.trim())).unwrap_or((line.as_str(), "")) {
                    ("/quit", _) => break,
                    ("/list", _) => json!({"op": "conversations"}),
                    ("/open", id) if !id.is_empty() => {
                        open = Some(id.to_string());
                        oldest = None;
                        newest = 0;
                        read_mark = 0;
                        println!("opened {id}");
                        json!({"op": "history", "conversation_id": id, "limit": 20})
                    }
                    ("/receipts", _) => match &open {
                        Some(id) => json!({"op": "receipts", "conversation_id": id}),
                        None => { println!("open a conversation first: /open ID"); continue; }
                    },
                    ("/presence", users) if !users.is_empty() => {
                        json!({"op": "presence", "users": users.split_whitespace().collect::<Vec<_>>()})
                    }
                    ("/block", user) if !user.is_empty() => json!({"op": "block", "user_id": user}),
                    ("/unblock", user) if !user.is_empty() => json!({"op": "unblock", "user_id": user}),
                    (command @ ("/react" | "/unreact"), rest) => {
                        let (Some(id), Some((seq, emoji))) = (&open, rest.split_once(' ')) else {
                            println!("usage: {command} SEQ EMOJI in an open conversation");
                            continue;
                        };
                        let Ok(seq) = seq.parse::<u64>() else { println!("SEQ is a message number"); continue };
                        json!({"op": &command[1..], "conversation_id": id, "seq": seq, "emoji": emoji.trim()})
                    }
                    ("/reply", rest) => {
                        let (Some(id), Some((seq, text))) = (&open, rest.split_once(' ')) else {
                            println!("usage: /reply SEQ TEXT in an open conversation");
                            continue;
                        };
                        let Ok(seq) = seq.parse::<u64>() else { println!("SEQ is a message number"); continue };
                        counter += 1;
                        let client_msg_id = format!("{}-{}-{counter}", args.device, chrono::Utc::now().timestamp_millis());
                        json!({"op": "send", "conversation_id": id, "client_msg_id": client_msg_id, "kind": "text", "body": {"text": text}, "reply_to": seq})
                    }
                    ("/history", _) => match &open {
                        Some(id) => json!({"op": "history", "conversation_id": id, "before_seq": oldest, "limit": 20}),
                        None => { println!("open a conversation first: /open ID"); continue; }
                    },
                    ("/read", _) => match &open {
                        Some(id) => json!({"op": "read", "conversation_id": id, "seq": newest}),
                        None => { println!("open a conversation first: /open ID"); continue; }
                    },
                    (command, _) if command.starts_with('/') => { println!("unknown command {command}"); continue; }
                    _ => match &open {
                        Some(id) => {
                            counter += 1;
                            let client_msg_id = format!("{}-{}-{counter}", args.device, chrono::Utc::now().timestamp_millis());
                            json!({"op": "send", "conversation_id": id, "client_msg_id": client_msg_id, "kind": "text", "body": {"text": line}})
                        }
                        None => { println!("open a conversation first: /open ID"); continue; }
                    },
                };
                sink.send(send(frame)).await?;
            }
            message = stream.next() => {
                let Some(message) = message else { println!("disconnected"); break };
                let Message::Text(text) = message? else { continue };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                if frame["op"] == "history_result" {
                    let seqs: Vec<u64> = frame["messages"].as_array().map(|m| m.iter().filter_map(|m| m["seq"].as_u64()).collect()).unwrap_or_default();
                    if let Some(first) = seqs.first() {
                        oldest = Some(*first);
                    }
                    if let Some(last) = seqs.last() {
                        newest = newest.max(*last);
                    } else if oldest.is_none() {
                        println!("(no messages yet)");
                        continue;
                    }
                }
                if frame["op"] == "message" && frame["conversation_id"].as_str() == open.as_deref() {
                    newest = newest.max(frame["seq"].as_u64().unwrap_or(0));
                }
                // What this device holds: the senders get delivery receipts.
                if let Some(sync_seq) = frame["sync_seq"].as_u64() {
                    if frame["op"] == "message" && sync_seq > delivered {
                        delivered = sync_seq;
                        sink.send(send(json!({"op": "delivered", "sync_seq": sync_seq}))).await?;
                    }
                }
                // A direct conversation with messages: follow the other's presence.
                if newest > 0 {
                    if let Some(peer) = open.as_deref().and_then(|id| peer_of(id, &args.user)) {
                        if following.as_deref() != Some(peer.as_str()) {
                            if let Some(old) = following.take() {
                                sink.send(send(json!({"op": "presence_unsubscribe", "users": [old]}))).await?;
                            }
                            sink.send(send(json!({"op": "presence_subscribe", "users": [peer.clone()]}))).await?;
                            following = Some(peer);
                        }
                    }
                }
                // The open conversation is read as its messages are shown.
                if newest > read_mark && matches!(frame["op"].as_str(), Some("message" | "history_result")) {
                    if let Some(id) = &open {
                        read_mark = newest;
                        sink.send(send(json!({"op": "read", "conversation_id": id, "seq": newest}))).await?;
                    }
                }
                if !shown.first_time(&frame) || !fresh.keep(&frame) {
                    continue;
                }
                if let Some(text) = render(&frame) {
                    println!("{text}");
                }
            }
            _ = ping.tick() => sink.send(send(json!({"op": "ping"}))).await?,
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    Ok(())
}

#[cfg(test)]
mod tests;
