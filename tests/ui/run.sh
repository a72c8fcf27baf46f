#!/usr/bin/env bash
# The dashboard in a real headless Chromium: Debian's chromium, driven by playwright-core from
# npm, against `wharf up` with the example services. Installs what it needs itself; the
# screenshots go to $ARTIFACTS (default target/artifacts).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

cargo build --locked -p wharf --bins --examples --manifest-path "$root/Cargo.toml"
export WHARF_BIN="$root/target/debug/wharf"
export ARTIFACTS="${ARTIFACTS:-$root/target/artifacts}"

(cd "$here" && npm ci --silent --no-audit --no-fund && node --test)
echo "dashboard screenshots in $ARTIFACTS"
