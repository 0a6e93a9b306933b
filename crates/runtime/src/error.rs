//! The runtime's errors, by what the caller should do about them: fix a
//! setting, look at NATS, or look at the store. Binaries report them (with
//! anyhow); library code matches on the kind.

/// What went wrong, by who can fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, an environment variable, a file or the data directory is
    /// wrong: the message says which and what to do; retrying will not help.
    #[error("{0}")]
    Config(String),
    /// NATS could not be reached, refused, or an operation on it failed:
    /// retry, or look at the server the message names.
    #[error("{0}")]
    Nats(String),
    /// A service this process depends on (a JWKS endpoint, a push
    /// provider) failed or answered nonsense: retry, or look at it.
    #[error("{0}")]
    Remote(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] im_store::StoreError),
}

impl Error {
    /// Whether trying again later may succeed (NATS may come back; a wrong
    /// setting stays wrong).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Nats(_) | Error::Remote(_) => true,
            Error::Store(error) => !matches!(
                error,
                im_store::StoreError::Incompatible(_) | im_store::StoreError::Fenced { .. }
            ),
            Error::Config(_) => false,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error::Config(error.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// `Error::Config` with a formatted message.
#[macro_export]
macro_rules! config_error {
    ($($arg:tt)*) => { $crate::Error::Config(format!($($arg)*)) };
}

/// `Error::Nats` with a formatted message.
#[macro_export]
macro_rules! nats_error {
    ($($arg:tt)*) => { $crate::Error::Nats(format!($($arg)*)) };
}

/// Return `Error::Config` with a formatted message.
#[macro_export]
macro_rules! bail_config {
    ($($arg:tt)*) => { return Err($crate::config_error!($($arg)*)) };
}

/// Return `Error::Config` unless `cond` holds.
#[macro_export]
macro_rules! ensure_config {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::bail_config!($($arg)*);
        }
    };
}
