//! The load and fault lab behind `imctl bench` and `imctl chaos`: it starts
//! whole systems through `im-harness`, drives them with real clients, breaks
//! them, and measures or verifies what comes out. Kept apart from the
//! operator commands (`imctl up`, `status`, `send`, `dlq`, `replay`, …) so
//! that neither grows into the other; `imctl` only parses the arguments and
//! calls [`bench::run`] or [`chaos::run`].

pub mod bench;
mod bench_suite;
mod bench_tiers;
pub mod chaos;
pub mod error;
mod quiesce;
pub mod ws;

pub use error::{Error, Result};
