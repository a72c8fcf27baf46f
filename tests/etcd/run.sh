#!/usr/bin/env bash
# The tests that need a real etcd: the store's conformance suite and the etcd backend's own
# cases (resume after an etcd restart, a compacted start, prefixes), and registry nodes on one
# etcd (tests/cluster.rs) and two `wharf up` on one etcd (tests/up.rs, `on_etcd_…`), each against an etcd server the test starts on free loopback ports
# and kills. Installs Debian's etcd-server
# (and etcd-client, for etcdctl) when they are missing. `cargo test` alone skips these
# (they are #[ignore]d with this script named); this runs them.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
etcd --version | sed -n 1p   # sed reads it all: head could end the pipe early (SIGPIPE under pipefail)

cd "$root"
cargo test --locked -p wharf-store --test etcd -- --include-ignored
cargo test --locked -p wharf --test integration -- --include-ignored cluster:: up::on_etcd
