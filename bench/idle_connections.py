"""Memory a proxy spends per idle kept-alive client connection: opens N connections to the
proxy one after another, sends one request on each and reads its answer, keeps them all open,
and prints how much the proxy process's RSS grew per connection.

Usage: python3 idle_connections.py PORT PID N   (loopback only)"""

import socket
import sys
import time

port, pid, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def rss_mib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise SystemExit(f"no process {pid}")


def exchange(conn):
    conn.sendall(b"GET / HTTP/1.1\r\nHost: hello\r\n\r\n")
    answer = b""
    while b"hello" not in answer:
        data = conn.recv(4096)
        if not data:
            raise SystemExit("the proxy closed a connection")
        answer += data


before = rss_mib()
conns = []
for _ in range(count):
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    exchange(conn)
    conns.append(conn)
time.sleep(0.5)
after = rss_mib()
print(f"{count} idle connections: RSS {before:.1f} -> {after:.1f} MiB, "
      f"{(after - before) * 1024 / count:.1f} KiB each")
for conn in conns:
    conn.close()
