//! Where the binaries are: nats-server at `$IM_NATS_SERVER`, then in
//! `.tools/nats/bin/` of the workspace (where `infra/install-nats.sh` puts
//! it), then on `PATH`; this workspace's binaries beside the running
//! executable (imctl) or in the target directory (tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

pub fn nats_server_binary() -> crate::Result<PathBuf> {
    if let Ok(path) = std::env::var("IM_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    for root in [PathBuf::from("."), workspace_root()] {
        let local = root.join(".tools/nats/bin/nats-server");
        if local.exists() {
            return Ok(local);
        }
    }
    if let Ok(output) = Command::new("which").arg("nats-server").output() {
        if output.status.success() {
            return Ok(PathBuf::from(
                String::from_utf8_lossy(&output.stdout).trim(),
            ));
        }
    }
    let script = Path::new("infra/install-nats.sh");
    if script.exists() {
        let output = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()?;
        if output.status.success() {
            return Ok(PathBuf::from(
                String::from_utf8_lossy(&output.stdout).trim(),
            ));
        }
    }
    crate::bail_setup!("nats-server not found: run infra/install-nats.sh from the repository, set IM_NATS_SERVER, or pass --nats-url")
}

/// The directory this build's binaries are in: `$IM_BIN_DIR`, else the
/// running executable's (test executables live in `<target>/<profile>/deps`).
pub fn target_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("IM_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// A binary of this workspace, built by `cargo build --workspace --bins`.
pub fn workspace_binary(name: &str) -> crate::Result<PathBuf> {
    let path = target_bin_dir().join(name);
    if path.exists() {
        Ok(path)
    } else {
        crate::bail_setup!(
            "{} is missing: build every binary first (`cargo build --release --workspace --bins`; infra/test.sh does it for the tests)",
            path.display()
        )
    }
}
