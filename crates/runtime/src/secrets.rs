//! The gateway's JWT secret: never a default. `imctl up` makes one per data
//! directory (`credentials/jwt-secret`, mode 0600) unless given one, `imctl
//! token` and friends read it from there, and the gateway refuses to start
//! with a secret that is short or well known.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// Where a data directory keeps its secret.
pub fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials").join("jwt-secret")
}

/// Where a data directory keeps the key that signs service tokens: another
/// key than the users', so a leaked or guessed user-token key cannot mint a
/// token that reads every conversation.
pub fn service_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials").join("service-secret")
}

/// The shortest secret accepted (bytes): HS256 wants at least its output size.
pub const MIN_SECRET_BYTES: usize = 32;

/// Secrets that were shipped, documented or are common: refused whatever
/// their length.
const WELL_KNOWN: &[&str] = &[
    "dev-secret-change-me",
    "change-me",
    "changeme",
    "secret",
    "test-secret",
    "bench-secret",
    "chaos-secret",
];

/// 32 random bytes, hex.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why `secret` must not sign tokens, if it must not.
pub fn check(secret: &str) -> Result<(), String> {
    let advice = "use the one `imctl up` generates in <data-dir>/credentials/jwt-secret, or `openssl rand -hex 32`";
    if WELL_KNOWN
        .iter()
        .any(|known| known.eq_ignore_ascii_case(secret.trim()))
    {
        return Err(format!("the JWT secret is a well-known one; {advice}"));
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the JWT secret has {} bytes, fewer than {MIN_SECRET_BYTES}; {advice}",
            secret.len()
        ));
    }
    let first = secret.chars().next();
    if secret.chars().all(|c| Some(c) == first) {
        return Err(format!("the JWT secret repeats one character; {advice}"));
    }
    Ok(())
}

/// Write a file only its owner can read (mode 0600), if it does not exist
/// yet: true if this call made it, false if it was already there (another
/// process may have been first). Secrets and credentials are made here.
pub fn create_private(path: &Path, contents: &[u8]) -> crate::Result<bool> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(contents)?;
            file.sync_all()?;
            Ok(true)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(crate::config_error!("create {}: {error}", path.display())),
    }
}

/// The data directory's secret, made (mode 0600) if there is none yet.
/// Returns it and whether it was just made.
pub fn load_or_create(data_dir: &Path) -> crate::Result<(String, bool)> {
    load_or_create_at(&secret_path(data_dir), data_dir)
}

/// The data directory's service-token key, made (mode 0600) if missing.
pub fn load_or_create_service(data_dir: &Path) -> crate::Result<(String, bool)> {
    load_or_create_at(&service_secret_path(data_dir), data_dir)
}

fn load_or_create_at(path: &Path, data_dir: &Path) -> crate::Result<(String, bool)> {
    let created = !path.exists() && create_private(path, generate().as_bytes())?;
    Ok((read_at(path, data_dir)?, created))
}

/// The data directory's secret, or what to do when it has none.
pub fn read(data_dir: &Path) -> crate::Result<String> {
    read_at(&secret_path(data_dir), data_dir)
}

/// The data directory's service-token key.
pub fn read_service(data_dir: &Path) -> crate::Result<String> {
    read_at(&service_secret_path(data_dir), data_dir)
}

fn read_at(path: &Path, data_dir: &Path) -> crate::Result<String> {
    let secret = std::fs::read_to_string(path).map_err(|error| {
        crate::config_error!(
            "no JWT secret at {} ({error}): start the system with `imctl up --data-dir {}` first, or pass --secret / IM_JWT_SECRET",
            path.display(),
            data_dir.display()
        )
    })?;
    Ok(secret.trim().to_string())
}

/// `--secret` if given, else the data directory's.
pub fn resolve(given: Option<&str>, data_dir: &Path) -> crate::Result<String> {
    match given {
        Some(secret) => Ok(secret.to_string()),
        None => read(data_dir),
    }
}

#[cfg(test)]
mod tests;
