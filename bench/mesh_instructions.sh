#!/usr/bin/env bash
# Instructions per request through a Wharf sidecar pair (client side: web's outbound; server
# side: api's inbound; mTLS between them), each sidecar counted by callgrind (repeatable
# whatever else the machine does, unlike time on this VM). For a change on the mesh's request
# path: build the binary before and after, then
#
#   bash bench/mesh_instructions.sh OLD_BINARY [NEW_BINARY]    # LOAD_SECONDS=10 by default
#
# The pair forwards to nginx answering "hello" (Debian's nginx), loaded by wrk (16
# connections, keep-alive) for LOAD_SECONDS; each count divides a sidecar's instructions
# during the load (the counters are zeroed as it starts; shutdown is in, and is small) by
# the requests wrk completed. KEEP=DIR keeps the callgrind profiles (DIR/old-web, DIR/old-api, ...) for
# callgrind_annotate. WITH_HAPROXY=1 also counts the HAProxy pair of bench/mesh.sh (Debian's
# haproxy, one thread each, HTTP/2 over mTLS with the same CA's leaves) under the same load,
# and gives the last build's count against it: a ratio this VM's noise does not move.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind wrk nginx curl ${WITH_HAPROXY:+haproxy}; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install valgrind wrk nginx curl" >&2; exit 2; }
done
[ $# -ge 1 ] || { echo "usage: $0 OLD_BINARY [NEW_BINARY]" >&2; exit 2; }
SECONDS_OF_LOAD=${LOAD_SECONDS:-10}
source bench/lib.sh
BACKEND=$(free_port)
start_backend "$BACKEND" 0

# start_registry BINARY DIR: BINARY's registry, its data and output in DIR, once it answers;
# sets R (its URL) and registry_pid.
start_registry() {
  local port
  port=$(free_port)
  mkdir -p "$2"
  start "$1" registry --http "127.0.0.1:$port" --dns 127.0.0.1:0 --data-dir "$2/data" \
    >"$2/out" 2>"$2/err"
  registry_pid=$last_pid
  R="http://127.0.0.1:$port"
  for _ in $(seq 200); do curl -sf -o /dev/null "$R/v1/status/leader" && break; sleep 0.05; done
}

count() {
  local binary=$1 dir="${KEEP:-$work}/$2" R registry_pid
  mkdir -p "$dir-web" "$dir-api"
  start_registry "$binary" "$dir-registry"
  start valgrind --tool=callgrind --callgrind-out-file="$dir-api/callgrind.out" \
    "$binary" sidecar --threads 1 --service api --app "127.0.0.1:$BACKEND" --outbound none \
    --registry "$R" >"$dir-api/out" 2>"$dir-api/err"
  local api=$last_pid
  start valgrind --tool=callgrind --callgrind-out-file="$dir-web/callgrind.out" \
    "$binary" sidecar --threads 1 --service web --app 127.0.0.1:1 \
    --registry "$R" >"$dir-web/out" 2>"$dir-web/err"
  local web=$last_pid
  local port=""
  for _ in $(seq 600); do
    port=$(awk '/outbound/ {print $NF}' "$dir-web/out" | sed 's#http://127.0.0.1:##')
    [ -n "$port" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api' "http://127.0.0.1:$port/")" = 200 ] && break
    sleep 0.1
  done
  load_pair "$web" "$api" "http://127.0.0.1:$port/" INT "$registry_pid" \
    "$dir-web/callgrind.out" "$dir-api/callgrind.out"
}

# load_pair CLIENT_PID SERVER_PID URL SIGNAL REGISTRY_PID CLIENT_PROFILE SERVER_PROFILE: wrk's
# load through a pair under callgrind, counted from its start (start-up and the certificate
# fetch cost a fixed amount that would otherwise be spread over however many requests this
# run managed); the pair stopped with SIGNAL, then the registry; prints both sides' totals and
# the requests.
load_pair() {
  local web=$1 api=$2 url=$3 signal=$4 registry_pid=$5 requests
  callgrind_control --zero "$web" >/dev/null 2>&1
  callgrind_control --zero "$api" >/dev/null 2>&1
  requests=$(wrk -t1 -c16 -d"${SECONDS_OF_LOAD}s" -H 'Host: api' "$url" | awk '/requests in/ {print $1}')
  kill "-$signal" "$web" "$api"; wait "$web" "$api" 2>/dev/null || true
  kill "$registry_pid"; wait "$registry_pid" 2>/dev/null || true
  echo "$(awk '/^totals:/ {print $2}' "$6") $(awk '/^totals:/ {print $2}' "$7") $requests"
}
report() {
  local label=$1 web=$2 api=$3 requests=$4
  echo "$label: $requests requests; client side $((web / requests)), server side $((api / requests)), pair $(((web + api) / requests)) instructions per request"
}
# count_haproxy BINARY: the HAProxy pair under callgrind, its certificates from a registry of
# BINARY's; prints the client side's and the server side's instructions and the requests.
count_haproxy() {
  local dir="${KEEP:-$work}/haproxy" R registry_pid client server
  mkdir -p "$dir/certs"
  start_registry "$1" "$dir/registry"
  mesh_certs "$R" "$dir/certs"
  client=$(free_port)
  server=$(free_port)
  haproxy_pair_configs "$dir" "$client" "$server" "$BACKEND" "$dir/certs"
  start valgrind --tool=callgrind --callgrind-out-file="$dir/server.callgrind" \
    haproxy -f "$dir/haproxy-server.cfg" -db >"$dir/server.out" 2>&1
  local api=$last_pid
  start valgrind --tool=callgrind --callgrind-out-file="$dir/client.callgrind" \
    haproxy -f "$dir/haproxy-client.cfg" -db >"$dir/client.out" 2>&1
  local web=$last_pid
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$client/")" = 200 ] && break
    sleep 0.1
  done
  load_pair "$web" "$api" "http://127.0.0.1:$client/" TERM "$registry_pid" \
    "$dir/client.callgrind" "$dir/server.callgrind"
}

read -r old_web old_api old_requests < <(count "$1" old)
report old "$old_web" "$old_api" "$old_requests"
if [ $# -ge 2 ]; then
  read -r new_web new_api new_requests < <(count "$2" new)
  report new "$new_web" "$new_api" "$new_requests"
  echo "new/old per request: $(awk -v a="$((new_web + new_api))" -v an="$new_requests" -v b="$((old_web + old_api))" -v bn="$old_requests" 'BEGIN {printf "%.3f", (a / an) / (b / bn)}')"
fi
if [ -n "${WITH_HAPROXY:-}" ]; then
  read -r ha_web ha_api ha_requests < <(count_haproxy "$1")
  report haproxy "$ha_web" "$ha_api" "$ha_requests"
  read -r last_web last_api last_requests < <([ $# -ge 2 ] && echo "$new_web $new_api $new_requests" || echo "$old_web $old_api $old_requests")
  echo "wharf/haproxy per request: $(awk -v a="$((last_web + last_api))" -v an="$last_requests" -v b="$((ha_web + ha_api))" -v bn="$ha_requests" 'BEGIN {printf "%.3f", (a / an) / (b / bn)}')"
fi
