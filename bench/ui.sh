#!/usr/bin/env bash
# The dashboard's first paint with 1,000 services (goal: under 1 s): a release registry with
# SERVICES services, each with a minute of traffic reported, and Debian's headless Chromium
# loading /ui/ ROUNDS times in fresh pages: the time from navigation to the services table
# painted with every row. Registry on CPU 1, Chromium on CPU 0. Loopback only.
#
#   bash bench/ui.sh        # SERVICES (1000), ROUNDS (10) override; needs tests/ui's npm ci
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p wharf
(cd tests/ui && npm ci --silent --no-audit --no-fund)
source bench/lib.sh
start taskset -c 1 target/release/wharf registry --http 127.0.0.1:0 --dns 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>"$work/err"
for _ in $(seq 200); do grep -q http:// "$work/out" 2>/dev/null && break; sleep 0.05; done
url=$(grep -m1 -o 'http://[0-9.:]*' "$work/out")
taskset -c 0 node bench/ui.mjs "$url" "${SERVICES:-1000}" "${ROUNDS:-10}"
