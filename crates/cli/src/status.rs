//! `imctl status`: what the running system looks like, from the bus: per
//! function its partitions and each live replica (instance, pid, host, the
//! partitions it owns and their lag); gateways and their connections; the
//! NATS nodes and the streams each leads. Everything comes from the lease
//! and presence buckets and JetStream's own answers, so it works the same
//! for one node, a local cluster or a deployment.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv};
use clap::Args;
use futures::StreamExt;
use serde::Serialize;

use im_events::subjects::{unhex, LEASE_BUCKET, PRESENCE_BUCKET};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// NATS URL(s) of the system.
    #[arg(long, env = "IM_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Data directory (for its admin credentials and CA).
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Status {
    pub functions: Vec<Function>,
    pub gateways: Vec<Gateway>,
    pub nats: Vec<Node>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Function {
    pub name: String,
    pub partitions: u32,
    pub replicas: Vec<Replica>,
    /// Partitions no live replica holds (being taken over, or nobody runs).
    pub unowned: Vec<u32>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Replica {
    pub instance: String,
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub partitions: Vec<u32>,
    /// Messages not yet delivered or not yet acked, over its partitions.
    pub lag: Option<u64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Gateway {
    pub name: String,
    pub connections: usize,
    /// Where clients reach it (from its registration).
    pub url: Option<String>,
    /// Shutting down: closing its sessions, taking no new ones.
    pub draining: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Node {
    pub name: String,
    /// Streams (and KV buckets) this node leads.
    pub leads: Vec<String>,
}

/// What a replica says of itself in the lease bucket.
#[derive(Debug, Default, serde::Deserialize)]
struct Announcement {
    pid: Option<u32>,
    host: Option<String>,
}

/// A live replica's pid and host, as it announced them.
type Announced = (Option<u32>, Option<String>);

/// The lease bucket, read: live members per function (with what they
/// announce), and each partition's holder and lease revision.
#[derive(Debug, Default)]
pub struct Leases {
    pub members: BTreeMap<String, BTreeMap<String, Announced>>,
    pub holders: BTreeMap<String, BTreeMap<u32, (String, u64)>>,
}

impl Leases {
    /// One bucket entry (key, value, revision, age in ms), as the bucket
    /// holds it; entries older than `ttl_ms` are expired.
    pub fn add(&mut self, key: &str, value: &[u8], revision: u64, age_ms: i64, ttl_ms: i64) {
        if age_ms > ttl_ms {
            return;
        }
        if let Some(rest) = key.strip_prefix("members.") {
            if let Some((function, instance)) = rest.split_once('.') {
                let said: Announcement = serde_json::from_slice(value).unwrap_or_default();
                self.members
                    .entry(function.to_string())
                    .or_default()
                    .insert(instance.to_string(), (said.pid, said.host));
            }
        } else if let Some((function, partition)) = key.rsplit_once('.') {
            if let Ok(partition) = partition.parse::<u32>() {
                self.holders
                    .entry(function.to_string())
                    .or_default()
                    .insert(
                        partition,
                        (String::from_utf8_lossy(value).to_string(), revision),
                    );
            }
        }
    }
}

/// Pure: the functions' part of the status from what the buckets hold,
/// each function's partition count and the lag of each (function,
/// partition) that has one.
pub fn functions(
    names: &[&str],
    partitions: &dyn Fn(&str) -> u32,
    leases: &Leases,
    lag: &BTreeMap<(String, u32), u64>,
) -> Vec<Function> {
    names
        .iter()
        .map(|name| {
            let count = partitions(name);
            let holders = leases.holders.get(*name).cloned().unwrap_or_default();
            let mut replicas: BTreeMap<String, Replica> = BTreeMap::new();
            for (instance, (pid, host)) in leases.members.get(*name).into_iter().flatten() {
                replicas.insert(
                    instance.clone(),
                    Replica {
                        instance: instance.clone(),
                        pid: *pid,
                        host: host.clone(),
                        partitions: vec![],
                        lag: None,
                    },
                );
            }
            let mut unowned = Vec::new();
            for partition in 0..count {
                match holders.get(&partition) {
                    Some((instance, _)) => {
                        let replica = replicas.entry(instance.clone()).or_insert_with(|| Replica {
                            instance: instance.clone(),
                            pid: None,
                            host: None,
                            partitions: vec![],
                            lag: None,
                        });
                        replica.partitions.push(partition);
                        if let Some(lag) = lag.get(&(name.to_string(), partition)) {
                            *replica.lag.get_or_insert(0) += lag;
                        }
                    }
                    None => unowned.push(partition),
                }
            }
            Function {
                name: name.to_string(),
                partitions: count,
                replicas: replicas.into_values().collect(),
                unowned,
            }
        })
        .collect()
}

/// Every key's current value in one pass (a watch of the bucket's last
/// values, not a request per key: the presence bucket holds one key per
/// connected device).
async fn entries(bucket: &kv::Store) -> anyhow::Result<Vec<kv::Entry>> {
    let mut found = Vec::new();
    let held = bucket.stream.get_info().await?.state.messages;
    if held == 0 {
        return Ok(found);
    }
    let mut watch = bucket.watch_with_history(">").await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while let Ok(Some(entry)) = tokio::time::timeout_at(deadline, watch.next()).await {
        let entry = entry?;
        let last = entry.delta == 0;
        if entry.operation == kv::Operation::Put {
            found.push(entry);
        }
        if last {
            break;
        }
    }
    Ok(found)
}

fn age_ms(entry: &kv::Entry) -> i64 {
    chrono::Utc::now().timestamp_millis() - entry.created.timestamp_millis()
}

async fn ttl_ms(js: &jetstream::Context, bucket: &str) -> i64 {
    match js.get_stream(format!("KV_{bucket}")).await {
        Ok(mut stream) => match stream.info().await {
            Ok(info) if !info.config.max_age.is_zero() => info.config.max_age.as_millis() as i64,
            _ => i64::MAX,
        },
        Err(_) => i64::MAX,
    }
}

pub async fn gather(client: async_nats::Client) -> anyhow::Result<Status> {
    let js = jetstream::new(client.clone());
    let topology = im_runtime::topology::topology();
    let partitions = im_runtime::topology::existing_partitions(&js)
        .await
        .unwrap_or(topology.partitions.conversation);
    let mut leases = Leases::default();
    if let Ok(bucket) = js.get_key_value(LEASE_BUCKET).await {
        let ttl = ttl_ms(&js, LEASE_BUCKET).await;
        for entry in entries(&bucket).await? {
            leases.add(
                &entry.key,
                &entry.value,
                entry.revision,
                age_ms(&entry),
                ttl,
            );
        }
    }
    // Lag: each partition's newest consumer (owners read through one named
    // after their claim's epoch, `unread-p5-e812`; older ones are deleted
    // at take-over).
    let mut lag = BTreeMap::new();
    let existing = im_runtime::topology::pipeline_streams(&js)
        .await
        .unwrap_or_default();
    let shards = |def: &im_runtime::topology::ConsumerDef| {
        existing
            .iter()
            .filter(|name| im_runtime::topology::base_name(name) == def.stream)
            .cloned()
            .collect::<Vec<_>>()
    };
    for (def, stream_name) in topology
        .consumers
        .iter()
        .flat_map(|def| shards(def).into_iter().map(move |name| (def, name)))
    {
        let Ok(stream) = js.get_stream(&stream_name).await else {
            continue;
        };
        let mut names = Vec::new();
        let mut listed = stream.consumer_names();
        while let Some(Ok(name)) = listed.next().await {
            names.push(name);
        }
        let count = if def.partitioned_by.is_some() {
            partitions
        } else {
            1
        };
        for partition in 0..count {
            let Some(name) =
                newest_consumer(&names, &im_runtime::topology::durable_name(def, partition))
            else {
                continue;
            };
            if let Ok(info) = stream.consumer_info(&name).await {
                lag.insert(
                    (def.function.clone(), partition),
                    info.num_pending + info.num_ack_pending as u64,
                );
            }
        }
    }
    let count_of = |function: &str| -> u32 {
        match topology.consumers.iter().find(|c| c.function == function) {
            Some(def) if def.partitioned_by.is_none() => 1,
            Some(_) => partitions,
            // Functions without a consumer of their own (push): as many
            // partitions as they lease.
            None => leases
                .holders
                .get(function)
                .and_then(|held| held.keys().max().map(|max| max + 1))
                .unwrap_or(partitions),
        }
    };
    let functions = functions(&im_harness::FUNCTIONS, &count_of, &leases, &lag);

    let mut gateways: BTreeMap<String, usize> = BTreeMap::new();
    if let Ok(bucket) = js.get_key_value(PRESENCE_BUCKET).await {
        let ttl = ttl_ms(&js, PRESENCE_BUCKET).await;
        for entry in entries(&bucket).await? {
            let mut parts = entry.key.splitn(2, '.');
            let named =
                parts.next().and_then(unhex).is_some() && parts.next().and_then(unhex).is_some();
            if named && age_ms(&entry) <= ttl {
                let gateway = im_runtime::presence::gateway_of(&entry.value);
                *gateways.entry(gateway).or_default() += 1;
            }
        }
    }
    // The registry names every live gateway, devices or not; presence
    // fills in any that does not register (an older version).
    let mut registered: BTreeMap<String, Gateway> = BTreeMap::new();
    if let Ok(bucket) = js.get_key_value(im_gateway::access::GATEWAYS_BUCKET).await {
        let ttl = im_gateway::access::REGISTRATION_TTL.as_millis() as i64;
        for entry in entries(&bucket).await? {
            let Ok(registration) =
                serde_json::from_slice::<im_gateway::access::Registration>(&entry.value)
            else {
                continue;
            };
            if age_ms(&entry) <= ttl {
                registered.insert(
                    registration.id.clone(),
                    Gateway {
                        name: registration.id,
                        connections: registration.connections as usize,
                        url: Some(registration.url),
                        draining: registration.draining,
                    },
                );
            }
        }
    }
    for (name, connections) in gateways {
        registered.entry(name.clone()).or_insert(Gateway {
            name,
            connections,
            url: None,
            draining: false,
        });
    }
    let gateways = registered.into_values().collect();

    let mut nodes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let here = client.server_info().server_name;
    let mut streams = js.stream_names();
    while let Some(name) = streams.next().await {
        let name = name?;
        let Ok(mut stream) = js.get_stream(&name).await else {
            continue;
        };
        let info = stream.info().await?;
        match &info.cluster {
            Some(cluster) => {
                if let Some(leader) = &cluster.leader {
                    nodes.entry(leader.clone()).or_default().push(name.clone());
                }
                for replica in &cluster.replicas {
                    nodes.entry(replica.name.clone()).or_default();
                }
            }
            None => nodes.entry(here.clone()).or_default().push(name.clone()),
        }
    }
    if nodes.is_empty() {
        nodes.insert(here, vec![]);
    }
    let nats = nodes
        .into_iter()
        .map(|(name, mut leads)| {
            leads.sort();
            Node { name, leads }
        })
        .collect();
    Ok(Status {
        functions,
        gateways,
        nats,
    })
}

fn render(status: &Status) -> String {
    use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
    let mut out = String::new();
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
        "function",
        "partitions",
        "replica",
        "pid",
        "owns",
        "lag",
    ]);
    for function in &status.functions {
        if function.replicas.is_empty() {
            table.add_row(vec![
                function.name.clone(),
                function.partitions.to_string(),
                "(none live)".into(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for (n, replica) in function.replicas.iter().enumerate() {
            table.add_row(vec![
                if n == 0 {
                    function.name.clone()
                } else {
                    String::new()
                },
                if n == 0 {
                    function.partitions.to_string()
                } else {
                    String::new()
                },
                replica.instance.clone(),
                replica.pid.map(|p| p.to_string()).unwrap_or_default(),
                ranges(&replica.partitions),
                replica.lag.map(|l| l.to_string()).unwrap_or_default(),
            ]);
        }
        if !function.unowned.is_empty() {
            table.add_row(vec![
                String::new(),
                String::new(),
                "(unowned)".into(),
                String::new(),
                ranges(&function.unowned),
                String::new(),
            ]);
        }
    }
    out.push_str(&format!("{table}\n"));
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(vec!["gateway", "connections", "url"]);
    for gateway in &status.gateways {
        let url = gateway.url.clone().unwrap_or_default();
        table.add_row(vec![
            gateway.name.clone(),
            gateway.connections.to_string(),
            if gateway.draining {
                format!("{url} (draining)")
            } else {
                url
            },
        ]);
    }
    if status.gateways.is_empty() {
        table.add_row(vec![
            "(no gateway)".to_string(),
            String::new(),
            String::new(),
        ]);
    }
    out.push_str(&format!("{table}\n"));
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(vec!["nats node", "leads"]);
    for node in &status.nats {
        table.add_row(vec![node.name.clone(), node.leads.join(" ")]);
    }
    out.push_str(&format!("{table}\n"));
    out
}

/// The consumer of the highest epoch among `<durable>-e<epoch>` names.
pub fn newest_consumer(names: &[String], durable: &str) -> Option<String> {
    let prefix = format!("{durable}-e");
    names
        .iter()
        .filter_map(|name| {
            let epoch: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((epoch, name))
        })
        .max()
        .map(|(_, name)| name.clone())
}

/// `0-3 8 10-11`.
pub fn ranges(partitions: &[u32]) -> String {
    let mut sorted = partitions.to_vec();
    sorted.sort_unstable();
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    for p in sorted {
        run = match run {
            Some((from, to)) if p == to + 1 => Some((from, p)),
            Some((from, to)) => {
                parts.push(if from == to {
                    from.to_string()
                } else {
                    format!("{from}-{to}")
                });
                Some((p, p))
            }
            None => Some((p, p)),
        };
    }
    if let Some((from, to)) = run {
        parts.push(if from == to {
            from.to_string()
        } else {
            format!("{from}-{to}")
        });
    }
    parts.join(" ")
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    // As given (IM_NATS_CREDS / IM_NATS_CA), else as the data directory's
    // operator: its admin role and, with TLS, its CA.
    let mut access = im_runtime::config::NatsAccess::from_env()?;
    if access.credentials.is_none() {
        let admin = im_runtime::nats_auth::credentials_path(&args.data_dir, "admin");
        if admin.exists() {
            access.credentials = Some(im_runtime::nats_auth::Credentials::read(&admin)?);
        }
    }
    if access.ca.is_none() {
        access.ca = im_harness::certs::ca_in_use(&args.data_dir);
    }
    let client = im_runtime::config::connect_as(&args.nats_url, "imctl-status", &access).await?;
    let status = gather(client).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
