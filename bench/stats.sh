#!/usr/bin/env bash
# The registry's golden-metrics view with 1,000 services: one report covering all of them,
# then the time of GET /v1/wharf/stats (goal: under 50 ms). Registry pinned to CPU 1, the
# client on CPU 0. Loopback only; bounded in count.
#
#   bash bench/stats.sh        # SERVICES (1000), READS (50) override
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p wharf
source bench/lib.sh
start taskset -c 1 target/release/wharf registry --http 127.0.0.1:0 --dns 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>"$work/err"
for _ in $(seq 200); do grep -q http:// "$work/out" 2>/dev/null && break; sleep 0.05; done
url=$(grep -m1 -o 'http://[0-9.:]*' "$work/out")
taskset -c 0 python3 bench/stats.py "$url" "${SERVICES:-1000}" "${READS:-50}"
