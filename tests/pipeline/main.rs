//! Pipeline tests against a real nats-server and the real function
//! processes. Run `cargo build --workspace --bins` first (infra/test.sh does).

mod access;
mod backlog;
mod bad_input;
mod chaos;
mod chat;
mod cli;
mod crash;
mod delivery;
mod failover;
mod features;
mod fence;
mod gateway;
mod health;
mod idempotency;
mod limits;
mod offline;
mod openapi;
mod redrive;
mod replay;
mod scaleout;
mod sdk;
mod sharding;
mod takeover;
mod tiering;
mod timeline_changes;
mod tls;
mod tracing;
mod trust;
mod web;
