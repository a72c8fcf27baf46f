#!/usr/bin/env bash
# Canary benchmark: `wharf up` running REPLICAS instances of the example `hello` with
# `rollout = { canary = [1, 10, 50, 100], step = STEP, max_failure_rate = 0.01 }`, loaded
# through the gateway by wrk (CONNECTIONS clients) the whole time. Two `wharf apply`s:
#   1. a bad version (`FAIL_PERCENT=20`: a fifth of its answers are 500s): the time to its
#      rollback, and the failed requests the clients saw (its 1 % share of a fifth, for a
#      step: the price of finding out);
#   2. a good one (`GREETING` changed): the time to its promotion, and the failed requests
#      (goal: none).
# Then the share each subset had while split, from the subsets' golden metrics. Loopback
# only; every step bounded in time.
#
#   apt-get install wrk
#   bash bench/canary.sh     # REPLICAS (4), CONNECTIONS (8), STEP (5s)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
cargo build --release -q -p wharf --bins --examples
WHARF=${WHARF:-$PWD/target/release/wharf}
REPLICAS=${REPLICAS:-4}
CONNECTIONS=${CONNECTIONS:-8}
STEP=${STEP:-5s}
source bench/lib.sh

manifest() {
  cat >"$work/wharf.toml" <<TOML
[registry]
http = "127.0.0.1:0"
dns = "127.0.0.1:0"
data_dir = "$work/data"

[gateway]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[services.hello]
command = ["$PWD/target/release/examples/hello"]
replicas = $REPLICAS
env = { $1 }
check = { http = "/healthz", interval = "250ms", timeout = "250ms" }
rollout = { canary = [1, 10, 50, 100], step = "$STEP", max_failure_rate = 0.01 }
TOML
}
manifest 'GREETING = "Hello"'
start_up "$work/wharf.toml"
passing() { curl -sf "$R/v1/health/service/hello?passing" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
for _ in $(seq 1200); do [ "$(passing)" = "$REPLICAS" ] && break; sleep 0.05; done
[ "$(passing)" = "$REPLICAS" ] || { echo "hello never passed" >&2; exit 1; }

# apply_under_load NAME ENV: wrk for as long as the apply takes (at most 300 s).
apply_under_load() {
  timeout 330 wrk -t1 -c"$CONNECTIONS" -d300s -H 'Host: hello' "$G/" >"$work/wrk-$1.out" 2>&1 &
  local wrk_pid=$!
  sleep 2
  manifest "$2"
  local started ended
  started=$(date +%s.%N)
  "$WHARF" apply -f "$work/wharf.toml" --registry "$R" >"$work/apply-$1.out" 2>&1 || true
  ended=$(date +%s.%N)
  kill -INT "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" || true
  local requests non2xx errors
  requests=$(awk '/requests in/ {print $1}' "$work/wrk-$1.out")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk-$1.out")
  errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk-$1.out")
  python3 -c "print(f'$1: wharf apply answered after {$ended - $started:.1f} s; clients: ${non2xx:-0} non-2xx and ${errors:-0} socket errors of $requests requests')"
  grep "hello:" "$work/apply-$1.out" | sed 's/^/  /'
}
echo "hello: $REPLICAS instances, $CONNECTIONS clients, canary [1, 10, 50, 100] % for $STEP a step"
apply_under_load bad 'FAIL_PERCENT = "20"'
apply_under_load good 'GREETING = "Hi"'
grep "\[wharf\] canary" "$work/up.out" | sed 's/^/  /'
