#!/usr/bin/env bash
# Proxy benchmark: Wharf beside nginx and HAProxy (Debian packages) as reverse proxies, in one
# run, same backend (nginx answering a fixed body), same load generator (wrk), each proxy
# pinned to the same single core; also the backend directly, as the ceiling. The proxies take
# turns, round after round (a shared machine drifts; interleaving spreads the drift over all
# of them), and the summary is the median of the rounds. Loopback only; every run is bounded
# in time.
#
#   apt-get install wrk nginx haproxy
#   bash bench/proxy.sh     # ROUNDS (3), DURATION (10s, in seconds), CONNECTIONS (64),
#                           # IDLE (2000 idle connections for the memory figure) override
#   WHARF_BEFORE=path bash bench/proxy.sh   # also that wharf binary, interleaved in the same
#                           # rounds, for a change on the request path: before beside after
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx haproxy; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install wrk nginx haproxy" >&2; exit 2; }
done
cargo build --release -q -p wharf
WHARF=${WHARF:-target/release/wharf}   # another binary to compare: WHARF=path
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}

source bench/lib.sh
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" -H 'Host: hello' && return; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }

BACKEND=$(free_port); NGINX=$(free_port); HAPROXY=$(free_port); WHARF_PORT=$(free_port); ADMIN=$(free_port)
BEFORE_PORT=$(free_port); BEFORE_ADMIN=$(free_port)

# The backend: nginx with one worker answering "hello", on the load generator's core.
mkdir -p "$work/nginx"
start_backend "$BACKEND" "$LOAD_CPU"

# nginx as a reverse proxy, one worker, pooled upstream connections.
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream hello { server 127.0.0.1:$BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX;
    location / { proxy_pass http://hello; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
start taskset -c "$PROXY_CPU" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
nginx_pgid=$last_pid

# HAProxy, one thread, connection reuse.
cat >"$work/haproxy.cfg" <<CONF
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAPROXY
    default_backend hello
backend hello
    server b1 127.0.0.1:$BACKEND
CONF
start taskset -c "$PROXY_CPU" haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1
haproxy_pgid=$last_pid

# Wharf, with the backend as a static upstream (the request path is the same as with the
# registry: the endpoint set is read per request either way).
start taskset -c "$PROXY_CPU" "$WHARF" proxy --threads 1 --listen "127.0.0.1:$WHARF_PORT" --admin "127.0.0.1:$ADMIN" \
  --registry http://127.0.0.1:1 --upstream "hello=127.0.0.1:$BACKEND" >"$work/wharf.out" 2>"$work/wharf.log"
wharf_pid=$last_pid
labels="direct nginx haproxy wharf"
ports="$BACKEND $NGINX $HAPROXY $WHARF_PORT"
if [ -n "${WHARF_BEFORE:-}" ]; then
  start taskset -c "$PROXY_CPU" "$WHARF_BEFORE" proxy --threads 1 --listen "127.0.0.1:$BEFORE_PORT" --admin "127.0.0.1:$BEFORE_ADMIN" \
    --registry http://127.0.0.1:1 --upstream "hello=127.0.0.1:$BACKEND" >"$work/before.out" 2>"$work/before.log"
  before_pid=$last_pid
  labels="$labels before"
  ports="$ports $BEFORE_PORT"
fi

for port in $ports; do wait_port "$port"; done
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"; }
wharf_idle=$(rss "$wharf_pid")

echo "proxies on CPU $PROXY_CPU; backend (nginx) and wrk on CPU $LOAD_CPU; wrk -t1 -c$CONNECTIONS -d$DURATION"
# run LABEL PORT [PGID]: one wrk run; with PGID, also the proxy's CPU time per request.
run() {
  local label=$1 port=$2 pgid=${3:-}
  local out before after cpu=""
  [ -n "$pgid" ] && before=$(cpu_ticks "$pgid")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H 'Host: hello' "http://127.0.0.1:$port/")
  local rps p50 p99 errors requests
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  if [ -n "$pgid" ]; then
    after=$(cpu_ticks "$pgid")
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" -v d="${DURATION%s}" \
      'BEGIN { printf "cpu %5.2f us/req (%3.0f%% of a core)", t / hz / n * 1e6, t / hz / d * 100 }')
  fi
  printf '%-8s %10s req/s  p50 %8s  p99 %8s  %s %s\n' "$label" "$rps" "$p50" "$p99" "$cpu" "$errors"
  # For the summary: label, req/s, p50 and p99 in microseconds, CPU microseconds per request.
  echo "$label $rps $(us "$p50") $(us "$p99") $(echo "$cpu" | awk '{print $2}')" >>"$work/results"
}

for round in $(seq "$ROUNDS"); do
  echo "round $round"
  run direct "$BACKEND"
  run nginx "$NGINX" "$nginx_pgid"
  run haproxy "$HAPROXY" "$haproxy_pgid"
  # Sample Wharf's memory halfway through its run.
  ( sleep $(( ${DURATION%s} / 2 )); echo "$(rss "$wharf_pid")" >"$work/rss" ) &
  sampler=$!
  run wharf "$WHARF_PORT" "$wharf_pid"
  wait "$sampler"
  echo "wharf RSS under load: $(cat "$work/rss")"
  [ -n "${WHARF_BEFORE:-}" ] && run before "$BEFORE_PORT" "$before_pid"
done
echo "wharf RSS idle: $wharf_idle"

# Memory per idle kept-alive client connection, Wharf beside nginx (its worker process).
IDLE=${IDLE:-2000}
ulimit -n "$(ulimit -Hn)"
echo "wharf: $(python3 bench/idle_connections.py "$WHARF_PORT" "$wharf_pid" "$IDLE")"
echo "nginx: $(python3 bench/idle_connections.py "$NGINX" "$(pgrep -P "$nginx_pgid" | head -1)" "$IDLE")"

echo
echo "median of $ROUNDS rounds:"
for label in $labels; do
  median() { awk -v l="$label" -v c="$1" '$1==l {print $c}' "$work/results" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
  printf '%-8s %10.0f req/s  p50 %6.0f us  p99 %6.0f us  cpu %s us/req\n' \
    "$label" "$(median 2)" "$(median 3)" "$(median 4)" "$(median 5)"
  eval "${label}_rps=$(median 2) ${label}_p99=$(median 4) ${label}_cpu=$(median 5)"
done
awk -v w="$wharf_rps" -v n="$nginx_rps" -v h="$haproxy_rps" -v wp="$wharf_p99" -v np="$nginx_p99" \
  -v hp="$haproxy_p99" -v wc="$wharf_cpu" -v nc="$nginx_cpu" -v hc="$haproxy_cpu" 'BEGIN {
  printf "wharf/nginx:   throughput %.2fx  p99 %.2fx  cpu per request %.2fx\n", w / n, wp / np, wc / nc
  printf "wharf/haproxy: throughput %.2fx  p99 %.2fx  cpu per request %.2fx\n", w / h, wp / hp, wc / hc
}'
if [ -n "${WHARF_BEFORE:-}" ]; then
  awk -v w="$wharf_rps" -v b="$before_rps" -v wc="$wharf_cpu" -v bc="$before_cpu" -v wp="$wharf_p99" -v bp="$before_p99" 'BEGIN {
    printf "wharf/before:  throughput %.3fx  p99 %.2fx  cpu per request %.3fx\n", w / b, wp / bp, wc / bc
  }'
fi
