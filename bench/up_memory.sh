#!/usr/bin/env bash
# What the sidecars add to `wharf up`: the repository's wharf.toml run twice, with
# `mtls = true` (as it is) and `mtls = false`, each time until every instance passes, one
# request through `frontend`, then 5 s idle; the `wharf up` process's own memory (RssAnon in
# /proc/PID/status) is read, and the difference divided by the instances. The instances are
# processes of their own and are not counted.
#
#   cargo build --release --bins --examples && bash bench/up_memory.sh   # WHARF=... for another build
#
# The manifest copies get free loopback ports and absolute commands; the data goes to a
# scratch folder.
set -euo pipefail
cd "$(dirname "$0")/.."
WHARF=${WHARF:-target/release/wharf}
source bench/lib.sh
INSTANCES=8

run() {
  local mtls=$1 dir="$work/$1" http gateway
  mkdir -p "$dir"
  http=$(free_port)
  gateway=$(free_port)
  sed -e "s#^http = \"127.0.0.1:8500\"#http = \"127.0.0.1:$http\"#" \
    -e "s#^dns = \"127.0.0.1:8600\"#dns = \"127.0.0.1:0\"#" \
    -e "s#^listen = \"127.0.0.1:8080\"#listen = \"127.0.0.1:$gateway\"#" \
    -e "s#^mtls = true#mtls = $mtls#" \
    -e "s#\"target/release/examples/#\"$PWD/target/release/examples/#" wharf.toml >"$dir/wharf.toml"
  start "$WHARF" up -f "$dir/wharf.toml" >"$dir/out" 2>"$dir/err"
  local pid=$last_pid passing=0
  for _ in $(seq 600); do
    passing=$(curl -s "127.0.0.1:$http/v1/health/state/passing" |
      python3 -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin) if c["ServiceName"] and not c["ServiceName"].endswith("-sidecar-proxy")))' 2>/dev/null || echo 0)
    [ "$passing" -ge "$INSTANCES" ] && break
    sleep 0.2
  done
  [ "$passing" -ge "$INSTANCES" ] || { echo "mtls=$mtls: $passing of $INSTANCES instances passing" >&2; cat "$dir/err" >&2; exit 1; }
  curl -sf -o /dev/null -H 'Host: frontend' "127.0.0.1:$gateway/?data=x"
  sleep 5
  rss=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status")
  kill -INT -- "-$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

run true
with=$rss
run false
without=$rss
echo "wharf up, $INSTANCES instances: RssAnon $(awk -v k="$with" 'BEGIN {printf "%.1f", k / 1024}') MiB with mtls, $(awk -v k="$without" 'BEGIN {printf "%.1f", k / 1024}') MiB without: $(awk -v a="$with" -v b="$without" -v n="$INSTANCES" 'BEGIN {printf "%.2f", (a - b) / n / 1024}') MiB per instance's sidecar"
