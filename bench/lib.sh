# Shared by the bench scripts: a scratch folder, servers started in their own process
# groups (`start`), all of them killed with their children on exit, and free loopback ports.

work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start CMD...: runs CMD in the background in a new process group, remembered for cleanup.
# Its pid is in $last_pid.
start() {
  setsid "$@" &
  last_pid=$!
  pids+=("$last_pid")
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_backend PORT CPU: nginx with one worker answering "hello" on PORT, pinned to CPU (the
# backend every proxy benchmark forwards to).
start_backend() {
  mkdir -p "$work/backend"
  cat >"$work/backend/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/backend/nginx.pid;
error_log $work/backend/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$1; location / { return 200 "hello\n"; } }
}
CONF
  start taskset -c "$2" nginx -c "$work/backend/nginx.conf" -p "$work/backend"
}

# cpu_ticks PGID...: CPU clock ticks used so far by every process of the process groups given.
cpu_ticks() {
  local total=0 line rest g
  local groups=("$@")
  for stat in /proc/[0-9]*/stat; do
    read -r line <"$stat" 2>/dev/null || continue
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest  # from field 3 (state): $3 = process group, $12 = utime, $13 = stime
    for g in "${groups[@]}"; do [ "$3" = "$g" ] && total=$((total + ${12} + ${13})); done
  done
  echo "$total"
}

# wrk's "686.00us", "1.62ms", "1.01s" in microseconds.
us() { echo "$1" | awk '/us$/ {print $1+0} /ms$/ {print $1*1000} /[0-9]s$/ {print $1*1000000}'; }

# start_up MANIFEST: `$WHARF up -f MANIFEST`, its output in $work/up.out and up.err; sets R
# (the registry's URL) and G (the gateway's) once the gateway listens. It is stopped on exit as
# a user stops it (Ctrl-C), so that it stops its instances (which run in process groups of
# their own) before the scratch folder goes.
start_up() {
  start "$WHARF" up -f "$1" >"$work/up.out" 2>"$work/up.err"
  up_pid=$last_pid
  trap 'stop_up; cleanup' EXIT
  for _ in $(seq 200); do grep -q "gateway on" "$work/up.out" 2>/dev/null && break; sleep 0.05; done
  R=$(grep -m1 -o 'registry on http://[0-9.:]*' "$work/up.out" | grep -o 'http://.*')
  G=$(grep -m1 -o 'gateway on http://[0-9.:]*' "$work/up.out" | grep -o 'http://.*')
}

stop_up() {
  kill -INT "$up_pid" 2>/dev/null || return 0
  for _ in $(seq 400); do kill -0 "$up_pid" 2>/dev/null || return 0; sleep 0.05; done
}

# mesh_certs REGISTRY_URL DIR: the mesh's roots (DIR/roots.pem) and a leaf each for `web` (the
# client side of a pair) and `api` (the server side) from the registry's CA, as DIR/NAME.crt,
# NAME.key and NAME.pem (both), for the peer proxies of the mesh benchmarks.
mesh_certs() {
  curl -sf "$1/v1/connect/ca/roots?pem=true" >"$2/roots.pem"
  for service in web api; do
    curl -sf "$1/v1/agent/connect/ca/leaf/$service" | python3 -c '
import json, sys
leaf = json.load(sys.stdin)
d = sys.argv[1]
open(f"{d}.crt", "w").write(leaf["CertPEM"])
open(f"{d}.key", "w").write(leaf["PrivateKeyPEM"])
open(f"{d}.pem", "w").write(leaf["CertPEM"] + leaf["PrivateKeyPEM"])' "$2/$service"
  done
}

# haproxy_pair_configs DIR CLIENT_PORT SERVER_PORT BACKEND_PORT CERTS: DIR/haproxy-client.cfg
# (plain HTTP in on CLIENT_PORT, HTTP/2 over mTLS out, pooled, with web's leaf) and
# DIR/haproxy-server.cfg (mTLS in on SERVER_PORT with api's leaf, HTTP/1.1 to the backend),
# one thread each: the HAProxy pair a user would deploy instead of two sidecars.
haproxy_pair_configs() {
  local dir=$1 client=$2 server=$3 backend=$4 C=$5
  local common="global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always"
  cat >"$dir/haproxy-client.cfg" <<CONF
$common
frontend fe
    bind 127.0.0.1:$client
    default_backend api
backend api
    server s1 127.0.0.1:$server ssl crt $C/web.pem ca-file $C/roots.pem verify required verifyhost api.svc.wharf sni str(api.svc.wharf) alpn h2
CONF
  cat >"$dir/haproxy-server.cfg" <<CONF
$common
frontend fe
    bind 127.0.0.1:$server ssl crt $C/api.pem ca-file $C/roots.pem verify required alpn h2,http/1.1
    default_backend app
backend app
    server b1 127.0.0.1:$backend
CONF
}
