#!/usr/bin/env bash
# Autoscaling benchmark: `wharf up` running the example `hello` autoscaled
# (min 1, max 8, target_concurrency 2), loaded through the gateway by wrk with CONNECTIONS
# clients, each request taking WORK_MS in hello (`/?work=MS`), so the load needs
# CONNECTIONS / 2 instances. It measures:
#   1. from the step in load to the autoscaler's decision (the desired count in the registry
#      changing, polled every 50 ms), and to every new instance passing its check;
#   2. the requests that failed during the scale-up (wrk's errors and non-2xx answers);
#   3. the decisions during STEADY seconds of the same load once scaled (goal: none);
#   4. from the end of the load to the scale-down (goal: after the scale-down delay, DELAY),
#      and back to its least;
#   5. scale from zero: a second service, `cold` (the same hello, `min = 0`), with no instance;
#      the latency of its first request through the gateway (held there while an instance
#      starts) beside that instance's start-up time as the autoscaler measured it (from its
#      decision to the instance passing).
# Loopback only; every step is bounded in time.
#
#   apt-get install wrk
#   bash bench/autoscale.sh     # CONNECTIONS (16), WORK_MS (100), STEADY (120), DELAY (30s)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
cargo build --release -q -p wharf --bins --examples
WHARF=${WHARF:-$PWD/target/release/wharf}
CONNECTIONS=${CONNECTIONS:-16}
WORK_MS=${WORK_MS:-100}
STEADY=${STEADY:-120}
DELAY=${DELAY:-30s}
source bench/lib.sh

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
autoscale = { min = 1, max = 8, target_concurrency = 2, scale_down_delay = "$DELAY" }
check = { http = "/healthz", interval = "250ms", timeout = "250ms" }

[services.cold]
command = ["$PWD/target/release/examples/hello"]
autoscale = { min = 0, max = 2, target_concurrency = 2, scale_down_delay = "5s" }
check = { http = "/healthz", interval = "250ms", timeout = "250ms" }
TOML
start_up "$work/wharf.toml"

now() { date +%s.%N; }
desired() { curl -sf "$R/v1/wharf/services" | python3 -c 'import json,sys; print(json.load(sys.stdin)["hello"]["Replicas"])'; }
passing() { curl -sf "$R/v1/health/service/hello?passing" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
decisions() { curl -sf "$R/metrics" | awk '/^wharf_registry_autoscale_decisions_total/ {n += $2} END {print n + 0}'; }
# wait_until SECONDS CONDITION...: polls every 50 ms; fails the run past the deadline.
wait_until() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out: $*" >&2; tail -20 "$work/up.out" >&2; exit 1; }
    sleep 0.05
  done
}
is_desired() { [ "$(desired)" "$1" "$2" ]; }
is_passing() { [ "$(passing)" "$1" "$2" ]; }

wait_until 60 is_passing -ge 1
echo "hello: 1 instance passing; step to $CONNECTIONS clients x ${WORK_MS} ms (needs $((CONNECTIONS / 2)) at 2 in flight each)"

WANT=$((CONNECTIONS / 2))
LOAD_SECONDS=$((60 + STEADY))
step=$(now)
wrk -t1 -c"$CONNECTIONS" -d"${LOAD_SECONDS}s" -H 'Host: hello' "$G/?work=$WORK_MS" >"$work/wrk.out" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")
wait_until 30 is_desired -gt 1
decided=$(now)
wait_until 60 is_desired -ge "$WANT"
all_decided=$(now)
wait_until 60 is_passing -ge "$WANT"
all_passing=$(now)
echo "first decision after $(python3 -c "print(f'{$decided - $step:.2f}')") s; $WANT desired after $(python3 -c "print(f'{$all_decided - $step:.2f}')") s; all $WANT passing after $(python3 -c "print(f'{$all_passing - $step:.2f}')") s"
grep "\[wharf\] autoscale" "$work/up.out" | sed 's/^/  /'

# The same load, steady: decisions counted over STEADY seconds.
before=$(decisions)
sleep "$STEADY"
after=$(decisions)
echo "steady ${STEADY} s at the target ($(desired) desired, $(passing) passing): $((after - before)) decisions"
wait "$wrk_pid" || true
stopped=$(now)
grep -E "requests in|Non-2xx|Socket errors|Latency" "$work/wrk.out" | sed 's/^/  wrk: /'

wait_until 600 is_desired -lt "$WANT"
down=$(now)
echo "load stopped; scaled down to $(desired) after $(python3 -c "print(f'{$down - $stopped:.1f}')") s (scale_down_delay $DELAY)"
wait_until 120 is_desired -eq 1
least=$(now)
echo "back to 1 (its least) after $(python3 -c "print(f'{$least - $stopped:.1f}')") s: the highest count recommended over the delay, second by second"
grep "\[wharf\] autoscale" "$work/up.out" | tail -n +2 | sed 's/^/  /'

# 5. Scale from zero.
cold_passing() { curl -sf "$R/v1/health/service/cold?passing" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
is_cold_passing() { [ "$(cold_passing)" "$1" "$2" ]; }
[ "$(cold_passing)" = 0 ] || { echo "cold has an instance before any request" >&2; exit 1; }
first=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -H 'Host: cold' "$G/")
echo "scale from zero: first request to cold answered $first s (status, seconds)"
wait_until 60 is_cold_passing -eq 0
startup=$(grep -o 'service=cold from=1 to=0 .*startup_ms=[0-9]*' "$work/up.err" | grep -o 'startup_ms=[0-9]*' | tail -1)
echo "  its instance, from the decision to passing: ${startup#startup_ms=} ms (the autoscaler's measure); back to zero after the 5 s delay"

