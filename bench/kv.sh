#!/usr/bin/env bash
# KV benchmark: Wharf's /v1/kv beside etcd 3.4 (Debian's etcd-server) in one run, one load
# generator (wharf-bench, HTTP/1.1 keep-alive); each server pinned to the same single core, the
# load generator to the other. Durable puts (each acknowledged write fsynced), reads of one
# key, a lock handed over between sessions, and 10,000 blocking KV watchers over 1,000 keys.
# Loopback only; every load loop is bounded.
#
#   bash bench/kv.sh            # needs etcd-server (apt-get install etcd-server)
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

start_wharf() {  # start_wharf DIR: a registry on SERVER_CPU; its URL in $url, its pid in $pid
  start taskset -c "$SERVER_CPU" "$WHARF" registry --http 127.0.0.1:0 --dns 127.0.0.1:0 --data-dir "$1" \
    --http-max-conns-per-client 0 >"$1.out" 2>"$1.log"
  pid=$last_pid
  for _ in $(seq 200); do grep -q http:// "$1.out" 2>/dev/null && break; sleep 0.05; done
  url=$(grep -m1 -o 'http://[0-9.:]*' "$1.out")
}
start_wharf "$work/wharf"
WHARF_URL=$url
for _ in $(seq 200); do curl -sf "$ETCD/health" >/dev/null 2>&1 && break; sleep 0.05; done
echo "etcd $(etcd --version | head -1 | awk '{print $3}') at $ETCD; wharf at $WHARF_URL; servers on CPU $SERVER_CPU, load on CPU $CLIENT_CPU"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

load() { taskset -c "$CLIENT_CPU" "$BENCH" "$@"; }

echo "== durable puts, the same bytes under new keys (fsync on every acknowledged write)"
for _ in 1 2; do
  load etcd-put --url "$ETCD" --count "$COUNT" --concurrency "$CONCURRENCY"
  load kv-put --url "$WHARF_URL" --count "$COUNT" --concurrency "$CONCURRENCY"
done
load etcd-put --url "$ETCD" --count "$COUNT" --concurrency 1 --seconds 10
load kv-put --url "$WHARF_URL" --count "$COUNT" --concurrency 1 --seconds 10

echo "== reads of one key"
load etcd-range --url "$ETCD" --count 200000 --concurrency "$CONCURRENCY" --seconds 10
load kv-read --url "$WHARF_URL" --count 200000 --concurrency "$CONCURRENCY" --seconds 10

echo "== lock hand-over"
load lock-handover --url "$WHARF_URL" --rounds 200 --lock-delay 0s
load lock-handover --url "$WHARF_URL" --rounds 20 --lock-delay 1s

echo "== 10,000 blocking KV watchers over 1,000 keys (a fresh registry)"
start_wharf "$work/hold"
load hold --kv --url "$url" --pid "$pid" --watchers "${WATCHERS:-10000}" --services 1000
