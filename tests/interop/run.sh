#!/usr/bin/env bash
# The interoperability suite: unmodified Consul clients (py-consul from PyPI, `consul` from
# npm) against a real `wharf registry`. Installs the clients into tests/interop/ itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

cargo build --locked -p wharf --manifest-path "$root/Cargo.toml"
export WHARF_BIN="$root/target/debug/wharf"

venv="$here/.venv"
if [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"
fi
(cd "$here/python" && "$venv/bin/pytest" -q)

(cd "$here/node" && npm ci --silent --no-audit --no-fund && node --test)
