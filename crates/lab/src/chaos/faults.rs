//! The faults `imctl chaos` makes, one per round: SIGKILL a function
//! replica, a gateway or a NATS node (often a stream leader), pause a
//! replica past its lease, or let a replica join or leave.

use super::*;

/// What the fault rounds did so far, and what they still have to undo.
pub(super) struct Faults<'a> {
    args: &'a ChaosArgs,
    js: &'a jetstream::Context,
    leases: Option<jetstream::kv::Store>,
    started: Instant,
    /// Faults made, by kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// The longest time partitions took to move to another replica.
    pub max_failover: Duration,
    nats_down: Option<(usize, Instant)>,
    rounds: u64,
    /// The replica a scale fault added, until it leaves again.
    extra: Option<String>,
    joins: u32,
}

impl<'a> Faults<'a> {
    pub(super) async fn new(
        args: &'a ChaosArgs,
        js: &'a jetstream::Context,
        started: Instant,
    ) -> Self {
        Faults {
            args,
            js,
            leases: js
                .get_key_value(im_events::subjects::LEASE_BUCKET)
                .await
                .ok(),
            started,
            counts: BTreeMap::new(),
            max_failover: Duration::ZERO,
            nats_down: None,
            rounds: 0,
            extra: None,
            joins: 0,
        }
    }

    /// One fault.
    pub(super) async fn round(
        &mut self,
        system: &mut System,
        rng: &mut rand::rngs::StdRng,
    ) -> crate::Result<()> {
        // Bring back a NATS node that has been down a while.
        if let Some((index, since)) = self.nats_down {
            if since.elapsed() > Duration::from_secs(3) {
                system.procs[index].spawn()?;
                self.nats_down = None;
            }
        }
        // The first faults go through every kind once; then at random.
        // Until a NATS leader has been killed (the cluster may not have been
        // whole when its turn came), every free round tries again.
        let round = self.rounds;
        self.rounds += 1;
        let leader_due = !self.counts.contains_key("nats_leader") && self.nats_down.is_none();
        let roll: f64 = match round {
            0 => 0.1,
            1 if leader_due => 0.7,
            2 => 0.5,
            3 => 0.95,
            4 | 5 => 0.9,
            _ if leader_due => 0.7,
            _ => rng.random(),
        };
        // Scale: a replica joins (one more of a function), or the one that
        // joined leaves again, gracefully (SIGTERM: it hands its partitions
        // over after the batch in flight).
        if !self.args.no_scale && (0.85..0.95).contains(&roll) {
            let now = self.started.elapsed().as_secs_f64();
            match self.extra.take() {
                None => {
                    let function =
                        im_harness::FUNCTIONS[rng.random_range(0..im_harness::FUNCTIONS.len())];
                    self.joins += 1;
                    let instance = format!("{function}-x{}", self.joins);
                    system.add_function(function, &instance, &[])?;
                    *self.counts.entry("join").or_default() += 1;
                    eprintln!("chaos {now:>5.0}s: {instance} joins");
                    self.extra = Some(instance);
                }
                Some(instance) => {
                    let held = held_by(&self.leases, &instance).await;
                    let left = Instant::now();
                    if let Some(index) = system.procs.iter().position(|p| p.name == instance) {
                        system.procs[index].signal("TERM");
                        let clean = system.procs[index].wait_exit(Duration::from_secs(20));
                        let moved = wait_moved(
                            &self.leases,
                            &held,
                            Duration::from_millis(self.args.lease_ttl_ms * 4),
                        )
                        .await;
                        system.procs.remove(index);
                        *self.counts.entry("leave").or_default() += 1;
                        eprintln!(
                        "chaos {now:>5.0}s: {instance} leaves{}, its {} partitions taken over in {:?} ({:?} after SIGTERM)",
                        if clean { "" } else { " (killed after 20 s)" },
                        held.len(),
                        moved,
                        left.elapsed()
                    );
                    }
                }
            }
            return Ok(());
        }
        // A NATS node may go down only while the cluster is whole. Looked
        // at once per fault (a second look could disagree: under steady
        // writes a follower is a message behind at any instant), sampled
        // for a moment so such a flicker is not taken for a node catching
        // up; the NATS leader fault every run must have gives a cluster
        // still settling after start-up time to become whole.
        let whole = (0.65..0.85).contains(&roll)
            && self.nats_down.is_none()
            && cluster_whole_within(
                self.js,
                Duration::from_secs(if leader_due { 30 } else { 1 }),
            )
            .await;
        // Half of the NATS kills take the node leading one of the streams
        // (a shard, when they are sharded).
        let led = stream_leader(self.js, rng.random_range(0..64)).await;
        let leader = led.as_ref().map(|(_, node)| node.clone());
        let candidates: Vec<usize> = if roll < 0.45 {
            system
                .procs
                .iter()
                .enumerate()
                .filter(|(_, p)| matches!(p.kind, Kind::Function(_)))
                .map(|(i, _)| i)
                .collect()
        } else if roll < 0.65 {
            system
                .procs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.kind == Kind::Gateway)
                .map(|(i, _)| i)
                .collect()
        } else if whole {
            let nodes: Vec<usize> = system
                .procs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.kind == Kind::Nats)
                .map(|(i, _)| i)
                .collect();
            match leader.as_deref().and_then(|name| {
                nodes
                    .iter()
                    .copied()
                    .find(|i| system.procs[*i].name.ends_with(name))
            }) {
                Some(leading) if leader_due || rng.random_bool(0.5) => vec![leading],
                _ => nodes,
            }
        } else {
            vec![]
        };
        if candidates.is_empty() {
            // Pause a function replica past its lease, then resume it: it
            // must notice it lost its partitions (the fence refuses it).
            let mut functions = Vec::new();
            for (i, p) in system
                .procs
                .iter()
                .enumerate()
                .filter(|(_, p)| matches!(p.kind, Kind::Function(_)))
            {
                if !held_by(&self.leases, &p.name).await.is_empty() {
                    functions.push(i);
                }
            }
            if functions.is_empty() {
                return Ok(());
            }
            let victim = functions[rng.random_range(0..functions.len())];
            system.procs[victim].signal("STOP");
            let paused = Instant::now();
            let instance = system.procs[victim].name.clone();
            let held = held_by(&self.leases, &instance).await;
            let moved = wait_moved(
                &self.leases,
                &held,
                Duration::from_millis(self.args.lease_ttl_ms * 4),
            )
            .await;
            self.max_failover = self.max_failover.max(moved.unwrap_or(paused.elapsed()));
            system.procs[victim].signal("CONT");
            *self.counts.entry("pause").or_default() += 1;
            eprintln!(
                "chaos {:>5.0}s: paused {instance}, {} partitions moved in {:?}",
                self.started.elapsed().as_secs_f64(),
                held.len(),
                moved
            );
            return Ok(());
        }
        let victim = candidates[rng.random_range(0..candidates.len())];
        let name = system.procs[victim].name.clone();
        let kind = system.procs[victim].kind.label();
        let held = if kind == "function" {
            held_by(&self.leases, &name).await
        } else {
            vec![]
        };
        system.procs[victim].kill9();
        *self.counts.entry(kind).or_default() += 1;
        match kind {
            "nats" => {
                self.nats_down = Some((victim, Instant::now()));
                let leading = leader.as_deref().is_some_and(|l| name.ends_with(l));
                if leading {
                    *self.counts.entry("nats_leader").or_default() += 1;
                }
                eprintln!(
                    "chaos {:>5.0}s: SIGKILL {name}{}",
                    self.started.elapsed().as_secs_f64(),
                    match (&led, leading) {
                        (Some((stream, _)), true) => format!(" (leader of {stream})"),
                        _ => String::new(),
                    }
                );
            }
            "function" => {
                let moved = wait_moved(
                    &self.leases,
                    &held,
                    Duration::from_millis(self.args.lease_ttl_ms * 4),
                )
                .await;
                if let Some(moved) = moved {
                    self.max_failover = self.max_failover.max(moved);
                }
                system.procs[victim].spawn()?;
                eprintln!(
                    "chaos {:>5.0}s: SIGKILL {name}, {} partitions moved in {:?}, restarted",
                    self.started.elapsed().as_secs_f64(),
                    held.len(),
                    moved
                );
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                system.procs[victim].spawn()?;
                eprintln!(
                    "chaos {:>5.0}s: SIGKILL {name}, restarted",
                    self.started.elapsed().as_secs_f64()
                );
            }
        }
        Ok(())
    }

    /// Whether every kind of fault this run makes was made at least once.
    pub(super) fn covered(&self) -> bool {
        let scale: &[&str] = if self.args.no_scale {
            &[]
        } else {
            &["join", "leave"]
        };
        ["function", "gateway", "nats", "nats_leader", "pause"]
            .iter()
            .chain(scale)
            .all(|kind| self.counts.contains_key(kind))
    }

    /// Bring back a NATS node still down.
    pub(super) fn restore(&mut self, system: &mut System) -> crate::Result<()> {
        if let Some((index, _)) = self.nats_down.take() {
            system.procs[index].spawn()?;
        }
        Ok(())
    }
}
