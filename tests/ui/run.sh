#!/usr/bin/env bash
# What a person looks at, under the real programs: the dashboard in a headless Chromium
# (Debian's chromium, driven by playwright-core from npm) against `wharf up` with the example
# services, and `wharf top` in a tmux terminal. Installs what it needs itself; the screenshots
# go to $ARTIFACTS (default target/artifacts).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v chromium >/dev/null || ! command -v tmux >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium tmux >/dev/null
fi

cargo build --locked -p wharf --bins --examples --manifest-path "$root/Cargo.toml"
export WHARF_BIN="$root/target/debug/wharf"
export ARTIFACTS="${ARTIFACTS:-$root/target/artifacts}"

cargo test --locked -p wharf --test integration --manifest-path "$root/Cargo.toml" -- --include-ignored top::

(cd "$here" && npm ci --silent --no-audit --no-fund && node --test)
echo "dashboard screenshots in $ARTIFACTS"
