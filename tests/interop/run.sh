#!/usr/bin/env bash
# The interoperability suite: unmodified clients against a real `wharf registry`: Consul
# clients (py-consul from PyPI, `consul` from npm) on the HTTP API, `dig` and HAProxy (Debian)
# on DNS, and the Flask examples under `wharf up`. Installs what it needs itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# DNS clients from Debian: dig (dnsutils) and HAProxy.
if ! command -v dig >/dev/null || ! command -v haproxy >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq dnsutils haproxy >/dev/null
fi

cargo build --locked -p wharf --manifest-path "$root/Cargo.toml"
export WHARF_BIN="$root/target/debug/wharf"

venv="$here/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"
(cd "$here/python" && "$venv/bin/pytest" -q)

(cd "$here/node" && npm ci --silent --no-audit --no-fund && node --test)
