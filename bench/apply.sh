#!/usr/bin/env bash
# `wharf apply` benchmark: `wharf up` running the example `hello` (REPLICAS instances, HTTP
# check every 250 ms) loaded through the gateway by wrk (CONNECTIONS clients, DURATION
# seconds, each request taking WORK_MS in hello). Two runs of the same load:
#   1. steady: nothing changes (the baseline);
#   2. rollout: 3 s in, the manifest's env changes and `wharf apply` rolls every instance onto
#      it, one at a time (start, first passing check, the old one drained 500 ms and stopped).
# It reports the apply's wall time (from the command to its answer, every instance
# replaced), per instance, and for both runs wrk's requests/s, p50/p99 and its failures
# (socket errors and non-2xx): the rollout's goal is none, at a latency close to the steady
# run's. Loopback only; every step bounded in time.
#
#   apt-get install wrk
#   bash bench/apply.sh     # REPLICAS (4), CONNECTIONS (16), WORK_MS (5), DURATION (20)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
cargo build --release -q -p wharf --bins --examples
WHARF=${WHARF:-$PWD/target/release/wharf}
REPLICAS=${REPLICAS:-4}
CONNECTIONS=${CONNECTIONS:-16}
WORK_MS=${WORK_MS:-5}
DURATION=${DURATION:-20}
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
env = { GREETING = "$1" }
check = { http = "/healthz", interval = "250ms", timeout = "250ms" }
TOML
}
manifest "Hello"
start_up "$work/wharf.toml"
passing() { curl -sf "$R/v1/health/service/hello?passing" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
for _ in $(seq 1200); do [ "$(passing)" = "$REPLICAS" ] && break; sleep 0.05; done
[ "$(passing)" = "$REPLICAS" ] || { echo "hello never passed" >&2; tail "$work/up.out" >&2; exit 1; }

load() {
  timeout $((DURATION + 30)) wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H 'Host: hello' \
    "$G/?work=$WORK_MS" >"$work/wrk-$1.out" 2>&1
}
report() {
  local out="$work/wrk-$1.out"
  local rps p50 p99 errors non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  p50=$(awk '$1 == "50%" {print $2}' "$out")
  p99=$(awk '$1 == "99%" {print $2}' "$out")
  errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$out")
  printf '%-8s %10s req/s  p50 %8s  p99 %8s  socket errors %s  non-2xx %s\n' \
    "$1" "$rps" "$p50" "$p99" "${errors:-0}" "${non2xx:-0}"
}

echo "hello: $REPLICAS instances; $CONNECTIONS clients x ${WORK_MS} ms for ${DURATION} s, twice"
load steady
load rollout &
wrk_pid=$!
sleep 3
manifest "Hi"
started=$(date +%s.%N)
"$WHARF" apply -f "$work/wharf.toml" --registry "$R" >"$work/apply.out" 2>&1 || { cat "$work/apply.out" >&2; exit 1; }
ended=$(date +%s.%N)
wait "$wrk_pid"
report steady
report rollout
python3 -c "t = $ended - $started; print(f'wharf apply: {t:.2f} s for $REPLICAS instances, {t / $REPLICAS:.2f} s each')"
sed 's/^/  /' "$work/apply.out"
replaced=$(curl -sf "$R/v1/health/service/hello?passing" | python3 -c 'import json,sys; print(sum(e["Service"]["ID"].endswith("-v2") for e in json.load(sys.stdin)))')
echo "instances on the new spec: $replaced of $REPLICAS"
