#!/usr/bin/env bash
# The interoperability suite: unmodified clients against a real `wharf registry` (and registry
# nodes on a real etcd): Consul
# clients (py-consul from PyPI, `consul` from npm) on the HTTP API, `dig` and HAProxy (Debian)
# on DNS, and the Flask examples under `wharf up`. Installs what it needs itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# From Debian: the DNS clients dig (dnsutils) and HAProxy, Debian's own Consul client
# (python3-consul 0.7.1, for Debian's python3), etcd for registry nodes on one store, and
# nghttp2's client nghttp (nghttp2-client) against the sidecars' HTTP/2 server.
if ! command -v dig >/dev/null || ! command -v haproxy >/dev/null || ! command -v etcd >/dev/null \
  || ! command -v nghttp >/dev/null \
  || ! /usr/bin/python3 -c 'import consul' 2>/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq dnsutils haproxy python3-consul etcd-server nghttp2-client >/dev/null
fi

cargo build --locked -p wharf --manifest-path "$root/Cargo.toml"
export WHARF_BIN="$root/target/debug/wharf"

venv="$here/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"
# Older Python clients are all the `consul` package too: each in a folder of its own, put on
# PYTHONPATH by test_unimplemented.py.
for client in python-consul==1.1.0 python-consul2==0.1.5; do
  folder="$here/.clients/${client%%==*}"
  [ -d "$folder/consul" ] || "$venv/bin/pip" install --quiet --disable-pip-version-check \
    --target "$folder" "$client"
done
(cd "$here/python" && "$venv/bin/pytest" -q)

(cd "$here/node" && npm ci --silent --no-audit --no-fund && node --test)
