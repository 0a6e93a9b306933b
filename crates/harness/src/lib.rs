//! One way to start the system, for everyone who starts it: the tests,
//! `imctl up`, the benchmarks and the chaos lab.
//!
//! - [`certs`]: a data directory's CA and server certificate for TLS.
//! - [`binaries`]: where nats-server and this workspace's binaries are.
//! - [`process`]: a child process that can be killed, paused, restarted
//!   and is killed when dropped; free loopback ports.
//! - [`nats`]: a bare nats-server or cluster for tests of the runtime, and
//!   the node configurations the system runs on (`nats.conf`,
//!   `infra/nats/cluster.conf`) for a durability profile.
//! - [`system`]: [`System::builder`] → nats-server (one node or a cluster),
//!   every function (with replicas), gateways, streams created, ready.

pub mod binaries;
pub mod certs;
pub mod error;
pub mod nats;
pub mod process;
pub mod system;

pub use binaries::{nats_server_binary, target_bin_dir, workspace_binary, workspace_root};
pub use im_runtime::config::Durability;
pub use nats::{NatsCluster, NatsServer};
pub use process::{free_base, free_port, free_ports, wait_for_port, wait_port, Kind, Proc};
pub use system::{Builder, GatewayProc, System, FUNCTIONS};

pub use error::{Error, Result};
