#!/usr/bin/env bash
# Runs the whole system locally: installs nats-server (project-local), builds
# every binary in release mode, and starts `imctl up` with any arguments
# given (see `imctl up --help`). Ctrl-C stops everything.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
IM_NATS_SERVER="$("$root/infra/install-nats.sh")"
export IM_NATS_SERVER
cargo build --release --bins
exec "$root/target/release/imctl" up "$@"
