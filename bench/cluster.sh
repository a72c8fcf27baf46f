#!/usr/bin/env bash
# Cluster benchmark: registry nodes on etcd beside etcd itself, in one run, one load generator
# (wharf-bench). etcd (Debian's 3.4) on CPU 1; the Wharf nodes and the load generator on CPU 0,
# so etcd has the same core whether it is written to directly or through Wharf.
#   1. durable writes at 64 clients: etcd's own puts (JSON gateway) and registrations through
#      one Wharf node on etcd (each a transaction of the instance, its check and a tombstone);
#   2. a registration through node A waking a blocking query held on node B (per round).
# Loopback only; every load loop is bounded in count and time.
#
#   apt-get install etcd-server
#   bash bench/cluster.sh       # COUNT (20000), CONCURRENCY (64), ROUNDS (200) override
set -euo pipefail
cd "$(dirname "$0")/.."
command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 2; }
cargo build --release -q -p wharf -p wharf-bench
WHARF=target/release/wharf
BENCH=target/release/wharf-bench
COUNT=${COUNT:-20000}
CONCURRENCY=${CONCURRENCY:-64}
ROUNDS=${ROUNDS:-200}

source bench/lib.sh

client_port=$(free_port); peer_port=$(free_port)
start taskset -c 1 etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "bench=http://127.0.0.1:$peer_port" >"$work/etcd.log" 2>&1
ETCD="http://127.0.0.1:$client_port"
for _ in $(seq 200); do curl -sf "$ETCD/health" >/dev/null 2>&1 && break; sleep 0.05; done

node() {
  start taskset -c 0 "$WHARF" registry --store "etcd://127.0.0.1:$client_port" --node "$1" \
    --http 127.0.0.1:0 --dns 127.0.0.1:0 --data-dir "$work/$1" >"$work/$1.out" 2>"$work/$1.log"
  for _ in $(seq 200); do grep -q http:// "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
  grep -o 'http://[0-9.:]*' "$work/$1.out"
}
A=$(node a)
B=$(node b)
echo "etcd $(etcd --version | head -1 | awk '{print $3}') at $ETCD on CPU 1; nodes a ($A) and b ($B) and the load on CPU 0"

load() { taskset -c 0 "$BENCH" "$@"; }
echo "== durable writes, $CONCURRENCY clients"
load etcd-put --url "$ETCD" --count "$COUNT" --concurrency "$CONCURRENCY"
load register --url "$A" --count "$COUNT" --concurrency "$CONCURRENCY"
echo "== a write through a waking a query held on b"
load wake --writer "$A" --reader "$B" --rounds "$ROUNDS"
