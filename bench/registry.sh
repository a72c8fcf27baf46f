#!/usr/bin/env bash
# Registry benchmark: Wharf beside etcd 3.4 (Debian's etcd-server) in one run, one load
# generator (wharf-bench, HTTP/1.1 keep-alive), each server pinned to the same single core
# and the load generator to the other. Loopback only; every load loop is bounded.
#
#   bash bench/registry.sh            # needs etcd-server (apt-get install etcd-server)
#
# Prints the figures that docs/benchmarks.md records.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || true

cargo build --release -q -p wharf -p wharf-bench
WHARF=target/release/wharf
BENCH=target/release/wharf-bench
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
COUNT=${COUNT:-20000}
CONCURRENCY=${CONCURRENCY:-64}

source bench/lib.sh

client_port=$(free_port); peer_port=$(free_port)
start taskset -c "$SERVER_CPU" etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "bench=http://127.0.0.1:$peer_port" >"$work/etcd.log" 2>&1
ETCD="http://127.0.0.1:$client_port"

start taskset -c "$SERVER_CPU" "$WHARF" registry --http 127.0.0.1:0 --dns 127.0.0.1:0 --data-dir "$work/wharf" >"$work/wharf.out" 2>"$work/wharf.log"
wharf_pid=$last_pid

for _ in $(seq 200); do
  grep -q http:// "$work/wharf.out" 2>/dev/null && curl -sf "$ETCD/health" >/dev/null 2>&1 && break
  sleep 0.05
done
WHARF_URL=$(grep -m1 -o 'http://[0-9.:]*' "$work/wharf.out")
echo "etcd $(etcd --version | head -1 | awk '{print $3}') at $ETCD; wharf at $WHARF_URL; servers on CPU $SERVER_CPU, load on CPU $CLIENT_CPU"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

load() { taskset -c "$CLIENT_CPU" "$BENCH" "$@"; }

echo "== durable writes (fsync on every acknowledged write)"
load etcd-put --url "$ETCD" --count "$COUNT" --concurrency "$CONCURRENCY"
load register --url "$WHARF_URL" --count "$COUNT" --concurrency "$CONCURRENCY"
load etcd-put --url "$ETCD" --count "$COUNT" --concurrency 1 --seconds 10
load register --url "$WHARF_URL" --count "$COUNT" --concurrency 1 --seconds 10

echo "== reads"
for i in 1 2 3; do
  curl -sf -X PUT "$WHARF_URL/v1/agent/service/register" \
    -d "{\"Name\":\"hello\",\"ID\":\"hello-$i\",\"Port\":$((8000+i)),\"Check\":{\"TTL\":\"1h\",\"Status\":\"passing\"}}"
done
load etcd-range --url "$ETCD" --count 200000 --concurrency "$CONCURRENCY" --seconds 10
load read --url "$WHARF_URL" --service hello --count 200000 --concurrency "$CONCURRENCY" --seconds 10

echo "== held blocking queries (each run on a fresh registry, so that its memory is the queries' own)"
hold_run() {
  local dir="$work/hold-$1"
  # All watchers come from 127.0.0.1: lift the per-client connection limit (200 by default).
  start taskset -c "$SERVER_CPU" "$WHARF" registry --http 127.0.0.1:0 --dns 127.0.0.1:0 --data-dir "$dir" \
    --http-max-conns-per-client 0 >"$dir.out" 2>"$dir.log"
  local pid=$last_pid
  for _ in $(seq 200); do grep -q http:// "$dir.out" 2>/dev/null && break; sleep 0.05; done
  load hold --url "$(grep -m1 -o 'http://[0-9.:]*' "$dir.out")" --pid "$pid" --watchers "${WATCHERS:-10000}" --services "$1"
  kill "$pid"
}
hold_run 1000
hold_run 1
