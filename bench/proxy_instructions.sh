#!/usr/bin/env bash
# Instructions per proxied request, two `wharf proxy` binaries side by side, counted by
# callgrind (repeatable whatever else the machine does, unlike time on this VM). For a change
# on the proxy's request path: build the binary before and after, then
#
#   bash bench/proxy_instructions.sh OLD_BINARY NEW_BINARY      # LOAD_SECONDS=10 by default
#
# Each proxy (one event loop) forwards to nginx answering "hello" (Debian's nginx), loaded by
# wrk (4 connections, keep-alive) for LOAD_SECONDS; the count divides the proxy's instructions,
# start-up included (a few million, the same for both), by the requests wrk completed.
# KEEP=DIR keeps both callgrind profiles (DIR/old, DIR/new) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind wrk nginx; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install valgrind wrk nginx" >&2; exit 2; }
done
[ $# -eq 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
SECONDS_OF_LOAD=${LOAD_SECONDS:-10}
source bench/lib.sh
BACKEND=$(free_port)
start_backend "$BACKEND" 0

count() {
  local binary=$1 dir="${KEEP:-$work}/$2" port admin
  mkdir -p "$dir"
  port=$(free_port); admin=$(free_port)
  start valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$binary" proxy --threads 1 --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
    --registry http://127.0.0.1:1 --upstream "hello=127.0.0.1:$BACKEND" >"$dir/out" 2>"$dir/err"
  local pid=$last_pid
  for _ in $(seq 600); do curl -s -o /dev/null -H 'Host: hello' "http://127.0.0.1:$port/" && break; sleep 0.1; done
  local requests
  requests=$(wrk -t1 -c4 -d"${SECONDS_OF_LOAD}s" -H 'Host: hello' "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  local total
  total=$(awk '/^totals:/ {print $2}' "$dir/callgrind.out")
  echo "$total $requests"
}
read -r old old_requests < <(count "$1" old)
read -r new new_requests < <(count "$2" new)
echo "old: $old instructions for $old_requests requests ($((old / old_requests)) per request, start-up included)"
echo "new: $new instructions for $new_requests requests ($((new / new_requests)) per request, start-up included)"
echo "new/old per request: $(awk -v a="$new" -v an="$new_requests" -v b="$old" -v bn="$old_requests" 'BEGIN {printf "%.3f", (a / an) / (b / bn)}')"
