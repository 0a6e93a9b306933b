#!/usr/bin/env bash
# Runs the whole system locally: installs nats-server (project-local), builds
# every binary in release mode and the browser chat, and starts `imctl up`
# with any arguments given (see `imctl up --help`). Ctrl-C stops everything.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
IM_NATS_SERVER="$("$root/infra/install-nats.sh")"
export IM_NATS_SERVER
cargo build --release --bins
# The browser chat (served at /app/): the SDK and app, built with the
# machine's Node.js from npm packages.
if command -v npm >/dev/null 2>&1; then
  (cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build) \
    || echo "the web chat was not built (npm failed); everything else runs"
else
  echo "no npm: the web chat at /app/ is not built (install Node.js 20+ and run again)"
fi
exec "$root/target/release/imctl" up "$@"
