//! The harness's errors: a system that could not be set up or started says
//! what failed; the runtime's own errors keep their kind.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A process, a file or a port the system needs could not be had.
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Runtime(#[from] im_runtime::Error),
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// `Error::Setup` with a formatted message.
#[macro_export]
macro_rules! setup_error {
    ($($arg:tt)*) => { $crate::Error::Setup(format!($($arg)*)) };
}

/// Return `Error::Setup` with a formatted message.
#[macro_export]
macro_rules! bail_setup {
    ($($arg:tt)*) => { return Err($crate::setup_error!($($arg)*)) };
}

/// Return `Error::Setup` unless `cond` holds.
#[macro_export]
macro_rules! ensure_setup {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::bail_setup!($($arg)*);
        }
    };
}
