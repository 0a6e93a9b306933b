//! Who may do what on the bus: one NATS identity per role, each with
//! nats-server permissions that reach only that role's subjects.
//!
//! `imctl up` (and the test harness) makes a password per role in
//! `<data-dir>/credentials/nats/<role>` (mode 0600, `user:password`) and
//! the server's `authorization` block from them; every process connects as
//! its role (`IM_NATS_CREDS`). Anonymous clients are refused. `publisher`
//! (for services that only inject events) may publish `im.ingest.>` and
//! nothing else: the internal stages, the pushes to devices, the KV buckets
//! and every public event stream are beyond it. Each role reads its
//! replies on an inbox prefix of its own (`_INBOX_<role>.`), so no role sees
//! another's replies (pull consumers deliver there).

use std::path::{Path, PathBuf};

/// A role's permissions: subjects it may publish to and subscribe to.
pub struct Role {
    pub name: &'static str,
    pub publish: &'static [&'static str],
    pub subscribe: &'static [&'static str],
    /// Uses JetStream (its API, acks, flow control) beyond plain publishes.
    pub jetstream: bool,
    /// Answers core requests (`allow_responses`).
    pub responds: bool,
}

const LEASES: &str = "$KV.IM_LEASES.>";
const REPLIES: &str = "im.gw.*.reply.>";
/// Where the account maps keyed ingest subjects when streams are sharded:
/// a publish to `im.ingest.k.…` is checked against its mapped subject.
/// Publishing there directly gains nothing: ingest refuses an event stored
/// in another partition than its key's.
const KEYED: &str = "im.keyed.>";

pub const ROLES: &[Role] = &[
    Role {
        name: "ingest",
        publish: &[
            // It publishes unkeyed events again, keyed.
            "im.ingest.k.>",
            KEYED,
            "im.events.message.rejected",
            "im.dlq.ingest",
            REPLIES,
            LEASES,
        ],
        subscribe: &[],
        jetstream: true,
        responds: false,
    },
    Role {
        name: "dedupe",
        publish: &[
            "im.timeline.>",
            "im.events.>",
            "im.dlq.dedupe",
            // Refusals of the keyed events it admits are ingest's checks'.
            "im.dlq.ingest",
            "im.gw.*.frames",
            "im.push.>",
            REPLIES,
            LEASES,
        ],
        subscribe: &[],
        jetstream: true,
        responds: false,
    },
    Role {
        name: "fanout",
        publish: &["im.delivery.>", "im.push.>", "im.dlq.fanout", LEASES],
        subscribe: &[],
        jetstream: true,
        responds: false,
    },
    Role {
        name: "unread",
        publish: &["im.push.>", "im.dlq.unread", REPLIES, LEASES],
        subscribe: &[],
        jetstream: true,
        responds: false,
    },
    Role {
        name: "push",
        publish: &["im.gw.*.frames", "im.dlq.push", LEASES],
        subscribe: &["im.push.>"],
        jetstream: true,
        responds: false,
    },
    Role {
        name: "offline",
        publish: &["im.dlq.offline", "$KV.IM_PUSH_TOKENS.>", LEASES],
        subscribe: &["im.offline.redrive.*"],
        jetstream: true,
        responds: true,
    },
    Role {
        name: "gateway",
        publish: &[
            "im.ingest.>",
            KEYED,
            "im.gw.>",
            "im.delivery.>",
            "im.dlq.gateway",
            "$KV.IM_PRESENCE.>",
            "$KV.IM_LAST_SEEN.>",
            "$KV.IM_GATEWAYS.>",
            "$KV.IM_DELIVERED.>",
            "$KV.IM_PUSH_TOKENS.>",
        ],
        subscribe: &["im.gw.>"],
        jetstream: true,
        responds: false,
    },
    Role {
        name: "admin",
        publish: &[">"],
        subscribe: &[">"],
        jetstream: true,
        responds: true,
    },
    Role {
        name: "publisher",
        publish: &["im.ingest.>", KEYED],
        subscribe: &[],
        jetstream: false,
        responds: false,
    },
];

/// JetStream operations no role but `admin` may use: they destroy stored
/// events, which replay and every guarantee rest on.
const DESTRUCTIVE: &[&str] = &[
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.ACCOUNT.PURGE.>",
];

pub fn role(name: &str) -> Option<&'static Role> {
    ROLES.iter().find(|role| role.name == name)
}

/// The role each function binary connects as.
pub fn role_of_process(process: &str) -> &'static str {
    let name = process.strip_prefix("im-").unwrap_or(process);
    match role(name) {
        Some(role) => role.name,
        None => "admin",
    }
}

/// The inbox prefix of a role's connections.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    /// `user:password` from a file.
    pub fn read(path: &Path) -> crate::Result<Credentials> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            crate::config_error!(
                "cannot read NATS credentials {} ({error}); `imctl up` makes them in <data-dir>/credentials/nats/",
                path.display()
            )
        })?;
        let (user, password) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| crate::config_error!("{} is not `user:password`", path.display()))?;
        Ok(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    /// What this process connects with: `IM_NATS_CREDS` (a file), or
    /// `IM_NATS_USER` and `IM_NATS_PASSWORD`, or none.
    pub fn from_env() -> crate::Result<Option<Credentials>> {
        if let Some(path) = std::env::var_os("IM_NATS_CREDS").filter(|p| !p.is_empty()) {
            return Credentials::read(Path::new(&path)).map(Some);
        }
        match (
            std::env::var("IM_NATS_USER"),
            std::env::var("IM_NATS_PASSWORD"),
        ) {
            (Ok(user), Ok(password)) if !user.is_empty() => {
                Ok(Some(Credentials { user, password }))
            }
            _ => Ok(None),
        }
    }
}

pub fn credentials_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials").join("nats")
}

pub fn credentials_path(data_dir: &Path, role: &str) -> PathBuf {
    credentials_dir(data_dir).join(role)
}

/// Every role's credentials, made (random, mode 0600) where missing.
pub fn ensure_credentials(data_dir: &Path) -> crate::Result<Vec<Credentials>> {
    let dir = credentials_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let mut all = Vec::new();
    for role in ROLES {
        let path = dir.join(role.name);
        if !path.exists() {
            let line = format!("{}:{}", role.name, crate::secrets::generate());
            crate::secrets::create_private(&path, line.as_bytes())?;
        }
        all.push(Credentials::read(&path)?);
    }
    Ok(all)
}

fn quoted(subjects: &[&str]) -> String {
    subjects
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// nats-server's `authorization` block for these credentials.
pub fn server_config(credentials: &[Credentials]) -> String {
    let mut users = Vec::new();
    for credential in credentials {
        let Some(role) = role(&credential.user) else {
            continue;
        };
        let inbox = format!("{}.>", inbox_prefix(role.name));
        let mut publish: Vec<&str> = role.publish.to_vec();
        let mut subscribe: Vec<&str> = role.subscribe.to_vec();
        subscribe.push(&inbox);
        if role.jetstream {
            publish.extend(["$JS.API.>", "$JS.ACK.>", "$JS.FC.>"]);
        }
        let deny = if role.name == "admin" || !role.jetstream {
            String::new()
        } else {
            format!(", deny: [{}]", quoted(DESTRUCTIVE))
        };
        let responses = if role.responds {
            ", allow_responses: true"
        } else {
            ""
        };
        users.push(format!(
            "    {{user: {:?}, password: {:?}, permissions: {{publish: {{allow: [{}]{deny}}}, subscribe: {{allow: [{}]}}{responses}}}}}",
            credential.user,
            credential.password,
            quoted(&publish),
            quoted(&subscribe),
        ));
    }
    format!(
        "# Made by imctl from {} role credentials: who may do what on the bus.\nauthorization {{\n  users: [\n{}\n  ]\n}}\n",
        users.len(),
        users.join(",\n")
    )
}

#[cfg(test)]
mod tests;
