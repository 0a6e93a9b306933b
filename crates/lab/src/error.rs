//! The lab's errors: a benchmark or a chaos run that could not run, or
//! found the system wrong, says what and where.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scenario could not run, or what it checked does not hold.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// NATS refused or failed an operation the scenario needs.
    #[error("NATS: {0}")]
    Nats(String),
    #[error(transparent)]
    Store(#[from] im_store::StoreError),
    /// A task of the scenario panicked or was cancelled.
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("timed out: {0}")]
    Timeout(#[from] tokio::time::error::Elapsed),
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error(transparent)]
    Runtime(#[from] im_runtime::Error),
    #[error(transparent)]
    Harness(#[from] im_harness::Error),
}

impl<K> From<async_nats::error::Error<K>> for Error
where
    K: Clone + std::fmt::Debug + std::fmt::Display + PartialEq,
{
    fn from(error: async_nats::error::Error<K>) -> Self {
        Error::Nats(error.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// `Error::Failed` with a formatted message.
#[macro_export]
macro_rules! failed {
    ($($arg:tt)*) => { $crate::Error::Failed(format!($($arg)*)) };
}

/// Return `Error::Failed` with a formatted message.
#[macro_export]
macro_rules! bail_failed {
    ($($arg:tt)*) => { return Err($crate::failed!($($arg)*)) };
}

/// Return `Error::Failed` unless `cond` holds.
#[macro_export]
macro_rules! ensure_failed {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::bail_failed!($($arg)*);
        }
    };
}
