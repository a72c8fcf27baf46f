# Shared by the bench scripts: a scratch folder, servers started in their own process
# groups (`start`), all of them killed with their children on exit, and free loopback ports.

work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start CMD...: runs CMD in the background in a new process group, remembered for cleanup.
# Its pid is in $last_pid.
start() {
  setsid "$@" &
  last_pid=$!
  pids+=("$last_pid")
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
