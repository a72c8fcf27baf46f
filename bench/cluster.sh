#!/usr/bin/env bash
# Cluster benchmark: registry nodes on etcd beside etcd itself, in one run, one load generator
# (wharf-bench). etcd (Debian's 3.4) on CPU 1; the Wharf nodes and the load generator on CPU 0,
# so etcd has the same core whether it is written to directly or through Wharf.
#   1. durable writes at 64 clients: etcd's own puts (JSON gateway) and registrations through
#      one Wharf node on etcd (each a transaction of the instance, its check and a tombstone);
#   2. a registration through node A waking a blocking query held on node B (per round);
#   3. 10,000 blocking queries held on node b over 1,000 services: b's memory, and one change
#      through b waking only its watchers;
#   4. a relist of 10,000 instances: a new node's start (its first load of the whole prefix,
#      the same code a compacted watch runs) timed to its first answer.
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

ulimit -n 65536 2>/dev/null || true
node() {
  # All watchers come from 127.0.0.1: no per-client connection limit.
  start taskset -c 0 "$WHARF" registry --store "etcd://127.0.0.1:$client_port" --node "$1" \
    --http 127.0.0.1:0 --dns 127.0.0.1:0 --data-dir "$work/$1" --http-max-conns-per-client 0 \
    >"$work/$1.out" 2>"$work/$1.log"
  echo "$last_pid" >"$work/$1.pid"
  for _ in $(seq 600); do grep -q http:// "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
  grep -o 'http://[0-9.:]*' "$work/$1.out" || { echo "node $1 did not start:" >&2; tail "$work/$1.log" >&2; exit 1; }
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
echo "== ${WATCHERS:-10000} queries held on b over 1,000 services"
load hold --url "$B" --pid "$(cat "$work/b.pid")" --watchers "${WATCHERS:-10000}" --services 1000
echo "== a relist of 10,000 instances: a new node's first load"
load register --url "$A" --count 10000 --concurrency "$CONCURRENCY" --service relist >/dev/null
before=$(date +%s%N)
C=$(node c)
after=$(date +%s%N)
instances=$(curl -sf "$C/v1/health/service/relist" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "node c answered with $instances relist instances $(( (after - before) / 1000000 )) ms after it was started (process start, etcd range of the whole prefix, catalog built, listening)"
