#!/usr/bin/env bash
# Regenerates crates/wharf/link/sidecar.order, the functions a sidecar runs, which
# crates/wharf/build.rs hands to lld so that they are linked next to each other (a standalone
# sidecar then keeps a few MiB of the binary resident instead of most of it). Run it after a
# change that moves the sidecar's code (a dependency bumped, the request path rewritten):
#
#   bash bench/symbol_order.sh [BINARY]    # target/release/wharf by default; IDLE_SECONDS=5, LOAD_SECONDS=5
#
# A pair (web's outbound, api's inbound; mTLS between them, forwarding to nginx answering
# "hello") runs under callgrind with names left mangled: first idle for IDLE_SECONDS, then
# dumped; then under wrk's load (keep-alive, then a connection a request) for LOAD_SECONDS,
# then stopped. The list is the idle names (sorted), then the names only the load ran
# (sorted), each kept only if the binary defines it as a function (`nm`): code from libc
# and the vDSO drops out. The order of the binary built from it does not matter: the names
# are the same.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
for tool in valgrind callgrind_control wrk nginx curl nm; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install valgrind wrk nginx curl binutils" >&2; exit 2; }
done
BINARY=$(realpath "${1:-target/release/wharf}")
[ -x "$BINARY" ] || { echo "$BINARY not found: cargo build --release -p wharf" >&2; exit 2; }
OUT=crates/wharf/link/sidecar.order
source bench/lib.sh
BACKEND=$(free_port)
start_backend "$BACKEND" 0

port=$(free_port)
mkdir -p "$work/registry" "$work/web" "$work/api"
start "$BINARY" registry --http "127.0.0.1:$port" --dns 127.0.0.1:0 --data-dir "$work/registry/data" \
  >"$work/registry/out" 2>"$work/registry/err"
R="http://127.0.0.1:$port"
for _ in $(seq 200); do curl -sf -o /dev/null "$R/v1/status/leader" && break; sleep 0.05; done

under_callgrind() {
  local name=$1
  shift
  start valgrind --tool=callgrind --demangle=no --dump-instr=no \
    --callgrind-out-file="$work/$name/callgrind.out" "$BINARY" sidecar "$@" \
    >"$work/$name/out" 2>"$work/$name/err"
}
under_callgrind api --service api --app "127.0.0.1:$BACKEND" --outbound none --registry "$R"
api=$last_pid
under_callgrind web --service web --app 127.0.0.1:1 --registry "$R"
web=$last_pid

outbound=""
for _ in $(seq 600); do
  outbound=$(awk '/outbound/ {print $NF}' "$work/web/out")
  [ -n "$outbound" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api' "$outbound/")" = 200 ] && break
  sleep 0.1
done
[ -n "$outbound" ] || { echo "web's outbound never routed to api" >&2; cat "$work/web/err" >&2; exit 1; }

sleep "${IDLE_SECONDS:-5}"  # the idle phase is measured, not waited for
for pid in "$web" "$api"; do callgrind_control --dump=idle "$pid" >/dev/null 2>&1; done
load=${LOAD_SECONDS:-5}
wrk -t1 -c16 -d"$(((load + 1) / 2))s" -H 'Host: api' "$outbound/" >/dev/null
wrk -t1 -c4 -d"$((load / 2 > 0 ? load / 2 : 1))s" -H 'Host: api' -H 'Connection: close' "$outbound/" >/dev/null
kill -INT "$web" "$api"
wait "$web" "$api" 2>/dev/null || true

# names FILE...: the functions callgrind profiles name (`fn=(id) name` the first time a
# file names one; recursion levels, `name'2`, folded into the name).
names() { sed -n 's/^c\?fn=([0-9]*) //p' "$@" | sed "s/'[0-9]*\$//" | sort -u; }
nm --defined-only "$BINARY" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$work/defined"
idle_dumps=("$work"/web/callgrind.out.*.1 "$work"/api/callgrind.out.*.1)
[ -e "${idle_dumps[0]}" ] || idle_dumps=("$work"/web/callgrind.out.1 "$work"/api/callgrind.out.1)
names "${idle_dumps[@]}" | comm -12 - "$work/defined" >"$work/idle"
names "$work"/web/callgrind.out* "$work"/api/callgrind.out* | comm -12 - "$work/defined" \
  | comm -23 - "$work/idle" >"$work/load"
cat "$work/idle" "$work/load" >"$OUT"
echo "$OUT: $(wc -l <"$work/idle") functions idle, $(wc -l <"$work/load") more under load"
