#!/usr/bin/env bash
# Instructions per registry read, two `wharf` binaries side by side, counted by callgrind
# (repeatable whatever else the machine does, unlike time on this VM). For a change on the
# registry's request path: build the binary before and after, then
#
#   bash bench/registry_instructions.sh OLD_BINARY NEW_BINARY      # READS=5000 by default
#
# Each registry gets three passing `hello` instances and READS reads of
# /v1/health/service/hello?passing from wharf-bench (4 connections, loopback). The total
# includes the registry's start-up, the same for both binaries. NEW_ACL=1 runs the second
# with ACLs on (default deny), its reads made with a token whose policy reads every service
# and node, so that each read is checked and filtered.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 2; }
[ $# -eq 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
cargo build --release -q -p wharf-bench
BENCH=target/release/wharf-bench
READS=${READS:-5000}
source bench/lib.sh

count() {
  local binary=$1 dir="$work/$2" acl=${3:-}
  mkdir -p "$dir"
  local flags=()
  [ -n "$acl" ] && flags=(--acl --acl-default-policy deny)
  start valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$binary" registry --http 127.0.0.1:0 --dns 127.0.0.1:0 --data-dir "$dir/data" "${flags[@]}" >"$dir/out" 2>"$dir/err"
  local pid=$last_pid
  for _ in $(seq 600); do grep -q http:// "$dir/out" 2>/dev/null && break; sleep 0.1; done
  local url root="" reader=()
  url=$(grep -m1 -o 'http://[0-9.:]*' "$dir/out")
  if [ -n "$acl" ]; then
    root=$(curl -sf -X PUT "$url/v1/acl/bootstrap" | sed 's/.*"SecretID":"\([^"]*\)".*/\1/')
    curl -sf -X PUT -H "X-Consul-Token: $root" "$url/v1/acl/policy" \
      -d '{"Name":"read","Rules":"service_prefix \"\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }"}' >/dev/null
    reader=(--token "$(curl -sf -X PUT -H "X-Consul-Token: $root" "$url/v1/acl/token" \
      -d '{"Policies":[{"Name":"read"}]}' | sed 's/.*"SecretID":"\([^"]*\)".*/\1/')")
  fi
  for i in 1 2 3; do
    curl -sf -X PUT -H "X-Consul-Token: $root" "$url/v1/agent/service/register" \
      -d "{\"Name\":\"hello\",\"ID\":\"hello-$i\",\"Port\":$((8000+i)),\"Check\":{\"TTL\":\"1h\",\"Status\":\"passing\"}}"
  done
  "$BENCH" read --url "$url" --service hello --count "$READS" --concurrency 4 --seconds 300 "${reader[@]}" >/dev/null
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^totals:/ {print $2}' "$dir/callgrind.out"
}
old=$(count "$1" old)
new=$(count "$2" new "${NEW_ACL:-}")
echo "old: $old instructions ($((old / READS)) per read, start-up included)"
echo "new: $new instructions ($((new / READS)) per read, start-up included)"
echo "new/old: $(awk -v a="$new" -v b="$old" 'BEGIN {printf "%.3f", a / b}')"
