//! The async runtime a process of the pipeline runs on.
//!
//! A function's work is a chain of wake-ups: a message arrives on the NATS
//! connection's task, wakes the partition's task, which hands store work to
//! a blocking thread and publishes through the connection's task again. On
//! a multi-threaded runtime each of those hand-overs may cross threads (a
//! futex wake and a context switch); at 1,000 msg/s `futex` alone was 3.5–7 %
//! of every function's CPU (docs/BENCHMARKS.md). `IM_WORKER_THREADS` sets
//! the runtime's worker threads: 0 runs every task on the thread that
//! started it (tokio's current-thread runtime); store work still goes to
//! the blocking pool.

use std::future::Future;

/// Worker threads when `IM_WORKER_THREADS` is not set.
pub const DEFAULT_WORKER_THREADS: usize = 2;

/// The worker threads `IM_WORKER_THREADS` asks for (the default if unset
/// or unreadable, with a warning on stderr for the latter).
pub fn worker_threads() -> usize {
    match std::env::var("IM_WORKER_THREADS") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            eprintln!("IM_WORKER_THREADS={text:?} is not a number; using {DEFAULT_WORKER_THREADS}");
            DEFAULT_WORKER_THREADS
        }),
        Err(_) => DEFAULT_WORKER_THREADS,
    }
}

/// Run `main` to completion on the process's runtime; its threads are named
/// `name` (so a profile tells the processes apart).
pub fn block_on<F: Future>(name: &str, main: F) -> std::io::Result<F::Output> {
    let threads = worker_threads();
    let mut builder = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = builder.enable_all().thread_name(name).build()?;
    Ok(runtime.block_on(main))
}
