#!/usr/bin/env bash
# Runs every test: installs nats-server (project-local), builds the function
# binaries the pipeline tests start, then runs the whole workspace's tests
# with cargo-nextest (or cargo test where nextest is not installed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
IM_NATS_SERVER="$("$root/infra/install-nats.sh")"
export IM_NATS_SERVER
# promtool (Debian's prometheus package) checks the alert rules; the test
# says plainly when it cannot.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  timeout 300 apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 \
    || echo "promtool not installed (apt-get install prometheus failed); the alert-rules check will say it is skipped"
fi
cargo build --workspace --bins
# Cargo features: a function builds without the ScyllaDB driver (`scylla`),
# and the pure cores `imctl replay` reuses build without their shells.
cargo check --quiet --no-default-features --features shell -p im-fanout
cargo check --quiet --no-default-features -p im-ingest -p im-dedupe -p im-fanout -p im-unread
# The TypeScript SDK (clients/js): its unit tests here, its integration
# script by tests/pipeline/sdk.rs against the real system.
if ! command -v node >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  timeout 600 apt-get install -y --no-install-recommends nodejs npm >/dev/null 2>&1 \
    || { timeout 300 apt-get update >/dev/null 2>&1 && timeout 600 apt-get install -y --no-install-recommends nodejs npm >/dev/null 2>&1; } || true
fi
# Debian's Chromium for the browser chat's test (tests/pipeline/web.rs).
if [ ! -x "${IM_CHROMIUM:-/usr/bin/chromium}" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { timeout 900 apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
    || { timeout 300 apt-get update >/dev/null 2>&1 && timeout 900 apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }; } \
    || echo "chromium not installed (apt-get install chromium failed); the browser test will say so"
fi
# schemathesis (PyPI) for tests/pipeline/openapi.rs, project-local.
if [ ! -x .tools/schemathesis/bin/st ]; then
  python3 -m venv .tools/schemathesis \
    && timeout 600 .tools/schemathesis/bin/pip install --quiet --disable-pip-version-check "schemathesis==4.32.5" \
    || echo "schemathesis not installed (pip install failed); tests/pipeline/openapi.rs will say so"
fi
command -v node >/dev/null 2>&1 || { echo "node (Node.js 20 or later) is needed for the SDK's tests: install it (apt-get install nodejs npm) and run again" >&2; exit 1; }
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build && npm test --silent)
if [ -z "${IM_SCYLLA_URI:-}" ]; then
  echo "ScyllaDB conformance run: skipped (IM_SCYLLA_URI is not set; set it to scylla://host/keyspace?rf=1 to run the store conformance suite against a live cluster)"
else
  echo "ScyllaDB conformance run: against $IM_SCYLLA_URI"
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
