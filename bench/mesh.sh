#!/usr/bin/env bash
# Mesh benchmark: a pair of proxies with mutual TLS between them, as a user would deploy one
# per side of a call: Wharf's two sidecars (client side: its outbound; server side: its
# inbound) beside an HAProxy pair and an nginx pair, the same certificates (a leaf each from
# one Wharf CA, EC P-256), the same backend (nginx answering a fixed body), the same load
# generator (wrk), each pair on the same one core. Also the backend directly, as the ceiling.
# The pairs take turns round after round; the summary is the median of the rounds, with each
# pair's CPU time per request (both of its processes), and the memory of a sidecar. Then the
# handshake rate of each server side: new mTLS connections (full TLS 1.3 handshakes with a
# client certificate, no resumption, one request each) from one load generator
# (`wharf-bench handshakes`, rustls), with the server's CPU time per connection. Every proxy
# process runs one thread (the sidecars one event loop: --threads 1, SIDECAR_THREADS
# overrides). Loopback only; every run is bounded in time.
#
#   apt-get install wrk nginx haproxy
#   bash bench/mesh.sh     # ROUNDS (3), DURATION (10s), CONNECTIONS (64) override
#   WHARF_BASELINE=/tmp/wharf-old bash bench/mesh.sh   # also a pair of that build, for a
#                                                      # before/after of a change, same run
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx haproxy openssl; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install wrk nginx haproxy openssl" >&2; exit 2; }
done
cargo build --release -q -p wharf -p wharf-bench
BENCH=target/release/wharf-bench
WHARF=${WHARF:-target/release/wharf}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}

source bench/lib.sh
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }

BACKEND=$(free_port); REGISTRY=$(free_port)
HA_CLIENT=$(free_port); HA_SERVER=$(free_port); NG_CLIENT=$(free_port); NG_SERVER=$(free_port)

# The backend: nginx with one worker answering "hello", on the load generator's core.
mkdir -p "$work/ngc" "$work/ngs" "$work/certs"
start_backend "$BACKEND" "$LOAD_CPU"

# One CA for everyone: Wharf's registry makes it; its leaves go to the HAProxy and nginx
# pairs too (web = the client side, api = the server side).
start "$WHARF" registry --http "127.0.0.1:$REGISTRY" --dns 127.0.0.1:0 --data-dir "$work/registry" \
  --leaf-ttl 24h >"$work/registry.out" 2>"$work/registry.log"
wait_port "$REGISTRY"
R="http://127.0.0.1:$REGISTRY"
mesh_certs "$R" "$work/certs"
C=$work/certs

# HAProxy pair, one thread each, HTTP/2 over mTLS between them (pooled, as the sidecars do).
haproxy_pair_configs "$work" "$HA_CLIENT" "$HA_SERVER" "$BACKEND" "$C"
start taskset -c "$PROXY_CPU" haproxy -f "$work/haproxy-server.cfg" -db >/dev/null 2>&1
ha_server=$last_pid
start taskset -c "$PROXY_CPU" haproxy -f "$work/haproxy-client.cfg" -db >/dev/null 2>&1
ha_client=$last_pid

# nginx pair, one worker each; nginx speaks HTTP/1.1 to upstreams, over pooled mTLS.
cat >"$work/ngs/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/ngs/nginx.pid;
error_log $work/ngs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:$NG_SERVER ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate $C/api.crt; ssl_certificate_key $C/api.key;
    ssl_client_certificate $C/roots.pem; ssl_verify_client on;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
cat >"$work/ngc/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/ngc/nginx.pid;
error_log $work/ngc/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream api { server 127.0.0.1:$NG_SERVER; keepalive 128; }
  server {
    listen 127.0.0.1:$NG_CLIENT;
    location / {
      proxy_pass https://api; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate $C/web.crt; proxy_ssl_certificate_key $C/web.key;
      proxy_ssl_trusted_certificate $C/roots.pem; proxy_ssl_verify on;
      proxy_ssl_name api.svc.wharf; proxy_ssl_server_name on; proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }
}
CONF
start taskset -c "$PROXY_CPU" nginx -c "$work/ngs/nginx.conf" -p "$work/ngs"
ng_server=$last_pid
start taskset -c "$PROXY_CPU" nginx -c "$work/ngc/nginx.conf" -p "$work/ngc"
ng_client=$last_pid

# Wharf's pair: api's sidecar in front of the backend, web's sidecar whose outbound side wrk
# calls (by Host, as an app would).
start taskset -c "$PROXY_CPU" "$WHARF" sidecar --threads "${SIDECAR_THREADS:-1}" --service api --app "127.0.0.1:$BACKEND" --outbound none \
  --registry "$R" >"$work/api.out" 2>"$work/api.log"
wh_server=$last_pid
start taskset -c "$PROXY_CPU" "$WHARF" sidecar --threads "${SIDECAR_THREADS:-1}" --service web --app 127.0.0.1:1 \
  --registry "$R" >"$work/web.out" 2>"$work/web.log"
wh_client=$last_pid
for _ in $(seq 200); do grep -q outbound "$work/web.out" 2>/dev/null && break; sleep 0.05; done
labels="nginx haproxy wharf"
if [ -n "${WHARF_BASELINE:-}" ]; then
  # The same pair from another build, registered under other names so the two pairs don't
  # share instances (web2 -> api2, allowed by the default intention as web -> api is).
  start taskset -c "$PROXY_CPU" "$WHARF_BASELINE" sidecar --threads "${SIDECAR_THREADS:-1}" --service api2 \
    --app "127.0.0.1:$BACKEND" --outbound none --registry "$R" >"$work/api2.out" 2>"$work/api2.log"
  bl_server=$last_pid
  start taskset -c "$PROXY_CPU" "$WHARF_BASELINE" sidecar --threads "${SIDECAR_THREADS:-1}" --service web2 \
    --app 127.0.0.1:1 --registry "$R" >"$work/web2.out" 2>"$work/web2.log"
  bl_client=$last_pid
  for _ in $(seq 200); do grep -q outbound "$work/web2.out" 2>/dev/null && break; sleep 0.05; done
  BL_CLIENT=$(awk '/outbound/ {print $NF}' "$work/web2.out" | sed 's#http://127.0.0.1:##')
  wait_port "$BL_CLIENT"
  for _ in $(seq 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api2' "http://127.0.0.1:$BL_CLIENT/")" = 200 ] && break
    sleep 0.1
  done
  labels="$labels baseline"
fi
WH_CLIENT=$(awk '/outbound/ {print $NF}' "$work/web.out" | sed 's#http://127.0.0.1:##')
WH_SERVER=$(awk '/inbound/ {print $NF}' "$work/api.out" | sed 's#127.0.0.1:##')
for port in $BACKEND $HA_CLIENT $NG_CLIENT $WH_CLIENT; do wait_port "$port"; done
for _ in $(seq 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api' "http://127.0.0.1:$WH_CLIENT/")" = 200 ] && break
  sleep 0.1
done
for port in $HA_CLIENT $NG_CLIENT $WH_CLIENT; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api' "http://127.0.0.1:$port/")
  [ "$code" = 200 ] || { echo "the pair on $port answers $code" >&2; tail "$work"/*.log "$work"/*/error.log >&2; exit 1; }
done
# VmRSS counts the pages of the wharf binary the process maps (shared with every wharf on the
# host); RssAnon is what the sidecar holds of its own.
rss() { awk '/VmRSS/ {r = $2} /RssAnon/ {a = $2} END {printf "%.1f (%.1f own)", r/1024, a/1024}' "/proc/$1/status"; }
idle_rss=$(rss "$wh_server")

# run LABEL PORT [PGID...]: one wrk run through a pair; its CPU time per request.
run() {
  local label=$1 port=$2 host=api; shift 2
  [ "$label" = baseline ] && host=api2
  groups=("$@")
  local before after out rps p50 p99 requests cpu="" errors
  [ "${#groups[@]}" -gt 0 ] && before=$(cpu_ticks "${groups[@]}")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $host" "http://127.0.0.1:$port/")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  if [ "${#groups[@]}" -gt 0 ]; then
    after=$(cpu_ticks "${groups[@]}")
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" -v d="${DURATION%s}" \
      'BEGIN { printf "cpu %5.2f us/req (%3.0f%% of a core)", t / hz / n * 1e6, t / hz / d * 100 }')
  fi
  printf '%-8s %10s req/s  p50 %8s  p99 %8s  %s %s\n' "$label" "$rps" "$p50" "$p99" "$cpu" "$errors"
  echo "$label $rps $(us "$p50") $(us "$p99") $(echo "$cpu" | awk '{print $2}')" >>"$work/results"
}

echo "each pair on CPU $PROXY_CPU; backend (nginx) and wrk on CPU $LOAD_CPU; wrk -t1 -c$CONNECTIONS -d$DURATION"
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  [ "$round" = 1 ] && run direct "$BACKEND"
  run nginx "$NG_CLIENT" "$ng_client" "$ng_server"
  run haproxy "$HA_CLIENT" "$ha_client" "$ha_server"
  run wharf "$WH_CLIENT" "$wh_client" "$wh_server"
  [ -n "${WHARF_BASELINE:-}" ] && run baseline "$BL_CLIENT" "$bl_client" "$bl_server"
done

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
if [ -n "${WHARF_BASELINE:-}" ]; then
  awk -v w="$wharf_rps" -v b="$baseline_rps" -v wp="$wharf_p99" -v bp="$baseline_p99" -v wc="$wharf_cpu" \
    -v bc="$baseline_cpu" 'BEGIN {
    printf "wharf/baseline: throughput %.2fx  p99 %.2fx  cpu per request %.2fx\n", w / b, wp / bp, wc / bc
  }'
fi
# handshakes LABEL PORT PGID: new mTLS connections per second to one server side.
handshakes() {
  local label=$1 port=$2 group=$3 before after out ok
  before=$(cpu_ticks "$group")
  out=$(taskset -c "$LOAD_CPU" "$BENCH" handshakes --addr "127.0.0.1:$port" --server-name api.svc.wharf \
    --roots "$C/roots.pem" --cert "$C/web.crt" --key "$C/web.key" --seconds "${DURATION%s}")
  after=$(cpu_ticks "$group")
  ok=$(echo "$out" | awk '{print $2}')
  awk -v l="$label" -v o="$out" -v n="$ok" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%-8s %s; server cpu %.0f us/connection\n", l, o, t / hz / n * 1e6 }'
  echo "$label $(echo "$out" | awk '{print $(NF-3)}') $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$ok" 'BEGIN {print t / hz / n * 1e6}')" >>"$work/handshakes"
}
echo
echo "handshake rate: the server side of each pair on CPU $PROXY_CPU, the load generator on CPU $LOAD_CPU"
for round in $(seq "$ROUNDS"); do
  handshakes nginx "$NG_SERVER" "$ng_server"
  handshakes haproxy "$HA_SERVER" "$ha_server"
  handshakes wharf "$WH_SERVER" "$wh_server"
done
for label in nginx haproxy wharf; do
  hmedian() { awk -v l="$label" -v c="$1" '$1==l {print $c}' "$work/handshakes" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
  eval "${label}_hs=$(hmedian 2) ${label}_hscpu=$(hmedian 3)"
  printf '%-8s median %6.0f connections/s  server cpu %5.0f us/connection\n' "$label" "$(hmedian 2)" "$(hmedian 3)"
done
awk -v w="$wharf_hs" -v n="$nginx_hs" -v h="$haproxy_hs" -v wc="$wharf_hscpu" -v hc="$haproxy_hscpu" -v nc="$nginx_hscpu" 'BEGIN {
  printf "wharf/nginx:   handshake rate %.2fx  cpu per connection %.2fx\n", w / n, wc / nc
  printf "wharf/haproxy: handshake rate %.2fx  cpu per connection %.2fx\n", w / h, wc / hc
}'
# How long an intention change takes to reach the sidecars: deny web -> api, then time until
# the pair answers 403 (polled every 10 ms, at most 5 s); then allow it back, likewise.
propagation() {
  local action=$1 want=$2 start code
  start=$(date +%s%N)
  curl -sf -X PUT -d "{\"Action\": \"$action\"}" "$R/v1/connect/intentions/exact?source=web&destination=api" >/dev/null
  for _ in $(seq 500); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api' "http://127.0.0.1:$WH_CLIENT/")
    [ "$code" = "$want" ] && { echo "intention $action reached the sidecar in $(( ($(date +%s%N) - start) / 1000000 )) ms"; return; }
    sleep 0.01
  done
  echo "intention $action did not reach the sidecar in 5 s"
}
echo
for _ in 1 2 3; do propagation deny 403; propagation allow 200; done
echo "wharf sidecar RSS: idle $idle_rss MiB, after the load $(rss "$wh_server") MiB (server side), $(rss "$wh_client") MiB (client side)"
