#!/usr/bin/env bash
# DNS benchmark: Wharf's DNS beside NSD (Debian's reference authoritative server) serving the
# equivalent zone, in one run, each server pinned to the same single core, dnsperf (Debian)
# pinned to the other. Then latency percentiles at half of Wharf's peak rate, measured by
# wharf-bench's fixed-rate UDP client against both. Loopback only; every run is bounded.
#
#   apt-get install nsd dnsperf
#   bash bench/dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in nsd dnsperf; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install nsd dnsperf" >&2; exit 2; }
done
cargo build --release -q -p wharf -p wharf-bench
WHARF=target/release/wharf
BENCH=target/release/wharf-bench
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}

source bench/lib.sh

# Wharf: three passing instances of hello.
start taskset -c "$SERVER_CPU" "$WHARF" registry --http 127.0.0.1:0 --dns 127.0.0.1:0 --data-dir "$work/wharf" >"$work/wharf.out" 2>"$work/wharf.log"
for _ in $(seq 200); do grep -q DNS "$work/wharf.out" 2>/dev/null && break; sleep 0.05; done
HTTP=$(grep -m1 -o 'http://[0-9.:]*' "$work/wharf.out")
WHARF_DNS_PORT=$(grep DNS "$work/wharf.out" | awk '{print $5}' | cut -d: -f2)
for i in 1 2 3; do
  curl -sf -X PUT "$HTTP/v1/agent/service/register" \
    -d "{\"Name\":\"hello\",\"ID\":\"hello-$i\",\"Address\":\"127.0.0.1\",\"Port\":$((9000+i)),\"Check\":{\"TTL\":\"1h\",\"Status\":\"passing\"}}"
done

# NSD: the same answers from a static zone.
NSD_PORT=$(free_udp_port)
mkdir -p "$work/nsd"
cat >"$work/nsd/wharf.zone" <<ZONE
\$ORIGIN wharf.
\$TTL 0
@ IN SOA ns.wharf. hostmaster.wharf. 1 3600 600 86400 0
@ IN NS ns.wharf.
ns IN A 127.0.0.1
hello.service IN A 127.0.0.1
hello.service IN SRV 1 1 9001 7f000001.addr.dc1.wharf.
hello.service IN SRV 1 1 9002 7f000001.addr.dc1.wharf.
hello.service IN SRV 1 1 9003 7f000001.addr.dc1.wharf.
7f000001.addr.dc1 IN A 127.0.0.1
ZONE
cat >"$work/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$NSD_PORT
  username: ""
  zonesdir: "$work/nsd"
  database: ""
  pidfile: "$work/nsd/nsd.pid"
  xfrdfile: "$work/nsd/xfrd.state"
  xfrdir: "$work/nsd"
  zonelistfile: "$work/nsd/zone.list"
  logfile: "$work/nsd/nsd.log"
  server-count: 1
  verbosity: 0
  # Debian's NSD limits answers to 200/s per client network by default (response rate
  # limiting); a benchmark from one address must turn that off.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: wharf.
  zonefile: wharf.zone
CONF
start taskset -c "$SERVER_CPU" nsd -d -c "$work/nsd/nsd.conf"
for _ in $(seq 100); do dig @127.0.0.1 -p "$NSD_PORT" +short +tries=1 +time=1 hello.service.wharf A >/dev/null 2>&1 && break; sleep 0.1; done

printf 'hello.service.wharf A\nhello.service.wharf SRV\n' >"$work/queries"
echo "nsd $(nsd -v 2>&1 | head -1 | awk '{print $3}') on :$NSD_PORT, wharf on :$WHARF_DNS_PORT; servers on CPU $SERVER_CPU, load on CPU $CLIENT_CPU"
echo "check: nsd SRV answers $(dig @127.0.0.1 -p "$NSD_PORT" +short hello.service.wharf SRV | wc -l), wharf SRV answers $(dig @127.0.0.1 -p "$WHARF_DNS_PORT" +short hello.service.wharf SRV | wc -l)"

peak() {
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries" -l "$SECONDS_PER_RUN" -c 8 -q 500 -T 1 2>&1 |
    awk '/Queries per second/ {qps=$4} /Queries lost/ {lost=$3" "$4} /Average Latency/ {lat=$4} END {printf "%.0f q/s, lost %s, avg latency %s s\n", qps, lost, lat}'
}
echo "== peak rate (dnsperf, 500 outstanding, ${SECONDS_PER_RUN}s)"
echo "nsd:   $(peak "$NSD_PORT")"
wharf_peak=$(peak "$WHARF_DNS_PORT")
echo "wharf: $wharf_peak"
rate=$(( $(echo "$wharf_peak" | awk '{print $1}') / 2 ))
echo "== latency at half of Wharf's peak ($rate q/s)"
taskset -c "$CLIENT_CPU" "$BENCH" dns-latency --server "127.0.0.1:$NSD_PORT" --rate "$rate" --seconds "$SECONDS_PER_RUN"
taskset -c "$CLIENT_CPU" "$BENCH" dns-latency --server "127.0.0.1:$WHARF_DNS_PORT" --rate "$rate" --seconds "$SECONDS_PER_RUN"
