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
  grep -m1 -o 'http://[0-9.:]*' "$work/$1.out" || { echo "node $1 did not start:" >&2; tail "$work/$1.log" >&2; exit 1; }
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
echo "== a relist after compaction on a running node"
# Node b stopped (SIGSTOP) while 10,000 instances change through a and etcd compacts past
# what b has seen; resumed, its watch is refused as compacted and it reads everything again.
# Two queries are held on b: one on the service that changed, one on a service that did not.
held() {
  local index
  index=$(curl -sf -o /dev/null -D - "$B/v1/health/service/$1" | tr -d '\r' | awk 'tolower($1)=="x-consul-index:" {print $2}')
  curl -sf -o "$work/held-$1" "$B/v1/health/service/$1?index=$index&wait=120s" >/dev/null 2>&1 &
  echo $!
}
changed_pid=$(held relist)
unchanged_pid=$(held bench)
metric() { curl -sf "$B/metrics" | awk -v name="$1" '$1 == name {print $2}'; }
reloads_before=$(metric wharf_registry_catalog_reloads_total)
kill -STOP "$(cat "$work/b.pid")"
load register --url "$A" --count 10000 --concurrency "$CONCURRENCY" --service relist >/dev/null
head=$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD" endpoint status -w json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])')
ETCDCTL_API=3 etcdctl --endpoints "$ETCD" compact "$head" >/dev/null
kill -CONT "$(cat "$work/b.pid")"
for _ in $(seq 600); do
  [ "$(metric wharf_registry_catalog_reloads_total)" != "$reloads_before" ] && break
  sleep 0.05
done
for _ in $(seq 200); do kill -0 "$changed_pid" 2>/dev/null || break; sleep 0.05; done
total=$(curl -sf "$B/v1/catalog/services" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
instances=$(metric wharf_registry_instances)
echo "node b relisted: reloads $reloads_before -> $(metric wharf_registry_catalog_reloads_total), \
the reload took $(metric wharf_registry_catalog_last_reload_seconds) s for $instances instances of $total services"
kill -0 "$changed_pid" 2>/dev/null && echo "the query on the changed service is STILL held (wrong)" \
  || echo "the query on the changed service answered"
kill -0 "$unchanged_pid" 2>/dev/null && echo "the query on an unchanged service is still held (right)" \
  || echo "the query on an unchanged service ANSWERED (a needless wake-up)"
kill "$unchanged_pid" 2>/dev/null || true
