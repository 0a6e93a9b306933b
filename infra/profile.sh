#!/usr/bin/env bash
# Profiles the release build where the benchmarks point:
#   cpu  — perf (cpu-clock, call graphs) of nats-server and every function
#          and the gateway while `imctl bench --scenario throughput` runs
#          at saturation; writes a per-process and a per-symbol summary.
#   heap — valgrind massif of the gateway while `imctl bench --scenario
#          connections` holds idle WebSocket connections; writes the peak
#          snapshot's allocation tree.
# Usage: infra/profile.sh [cpu|heap|all] [out-dir]   (default: all target/profile)
# Needs perf (perf_event_paranoid ≤ 2 is enough for one's own processes)
# and valgrind; builds the release binaries first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:-all}"
out="${2:-$root/target/profile}"
mkdir -p "$out"
cd "$root"
IM_NATS_SERVER="$("$root/infra/install-nats.sh")"
export IM_NATS_SERVER
# IM_PROFILE_BUILD=0 profiles the binaries as they are (e.g. a "before").
if [ "${IM_PROFILE_BUILD:-1}" = 1 ]; then
  cargo build --release --bins
fi
bin="$root/target/release"

# The processes a bench started: its children and theirs.
descendants() {
  local pid
  for pid in $(pgrep -P "$1" || true); do
    echo "$pid"
    descendants "$pid"
  done
}

cpu() {
  local log="$out/throughput.log"
  echo "profile: cpu — imctl bench --scenario throughput --duration 40s"
  "$bin/imctl" bench --scenario throughput --duration 40s --json >"$out/throughput.json" 2>"$log" &
  local bench=$!
  # Record only once the load runs, not while the system starts.
  for _ in $(seq 1 120); do
    grep -q "1:1 throughput" "$log" 2>/dev/null && break
    sleep 0.5
  done
  sleep 8
  local pids
  pids="$(descendants "$bench" | paste -sd, -)"
  echo "profile: recording pids $pids for 20 s"
  perf record -q -e cpu-clock -F 499 -g -o "$out/perf.data" -p "$pids" -- sleep 20 2>"$out/perf-record.log" || true
  wait "$bench"
  perf report -i "$out/perf.data" --no-children --sort comm --stdio -g none \
    >"$out/cpu-by-process.txt" 2>/dev/null || true
  perf report -i "$out/perf.data" --no-children --sort comm,dso,symbol --stdio -g none \
    >"$out/cpu-by-symbol-all.txt" 2>/dev/null || true
  grep -v '^$' "$out/cpu-by-symbol-all.txt" | sed -n '1,120p' >"$out/cpu-by-symbol.txt"
  echo "profile: $out/cpu-by-process.txt, $out/cpu-by-symbol.txt (perf.data for perf report)"
}

heap() {
  # A copy of the binaries where im-gateway runs under massif; imctl starts
  # its siblings, so the bench picks the wrapper up.
  local shadow="$out/massif-bin"
  rm -rf "$shadow"
  mkdir -p "$shadow"
  cp "$bin"/imctl "$bin"/im-* "$shadow"/ 2>/dev/null || true
  rm -f "$shadow"/*.d
  mv "$shadow/im-gateway" "$shadow/im-gateway.real"
  # Not exec: the bench SIGKILLs what it started 500 ms after SIGTERM,
  # and massif writes its profile only when the gateway has exited.
  cat >"$shadow/im-gateway" <<EOF
#!/usr/bin/env bash
valgrind --tool=massif --threshold=0.5 --massif-out-file="$out/massif.gateway.%p" "$shadow/im-gateway.real" "\$@" &
child=\$!
trap 'kill -TERM \$child' TERM INT
wait \$child
EOF
  chmod +x "$shadow/im-gateway"
  rm -f "$out"/massif.gateway.*
  echo "profile: heap — imctl bench --scenario connections --connections 2000 (gateway under massif)"
  "$shadow/imctl" bench --scenario connections --connections 2000 --json >"$out/connections.json" 2>"$out/connections.log"
  for _ in $(seq 1 120); do
    pgrep -f "$shadow/im-gateway.real" >/dev/null || break
    sleep 1
  done
  local file
  file="$(ls -S "$out"/massif.gateway.* | head -1)"
  ms_print "$file" >"$out/massif.txt"
  echo "profile: $out/massif.txt (from $file)"
}

case "$what" in
  cpu) cpu ;;
  heap) heap ;;
  all) cpu; heap ;;
  *) echo "usage: $0 [cpu|heap|all] [out-dir]" >&2; exit 2 ;;
esac
