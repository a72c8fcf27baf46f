"""Fixtures for the py-consul interoperability tests: a real `wharf registry` process on a
free port (and `store_registry`: one on each store backend, the embedded store and a real etcd),
and small HTTP/TCP targets for health checks. Every process started is stopped."""

import http.server
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
WHARF = os.environ.get("WHARF_BIN", str(ROOT / "target" / "debug" / "wharf"))
DEADLINE = 20.0


def eventually(what, condition, deadline=DEADLINE):
    """Polls `condition` until it is true; fails the test after `deadline` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.05)


def free_port():
    """A free loopback TCP port (for servers that cannot be given port 0, such as etcd)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port):
    """Whether something accepts TCP connections on the loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Registry:
    def __init__(self, data_dir, extra=()):
        self.proc = subprocess.Popen(
            [WHARF, "registry", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--data-dir", data_dir, *extra],
            stdout=subprocess.PIPE,
            env={**os.environ, "WHARF_LOG": "warn"},
            text=True,
        )
        line = self.proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://"), f"registry did not announce its address: {line!r}"
        self.host, port = url[len("http://"):].rsplit(":", 1)
        self.port = int(port)
        dns_line = self.proc.stdout.readline()
        self.dns_port = int(dns_line.split()[4].rsplit(":", 1)[1])

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def registry():
    with tempfile.TemporaryDirectory() as data_dir:
        reg = Registry(data_dir)
        try:
            yield reg
        finally:
            reg.stop()


class Etcd:
    """One etcd member on loopback with a scratch data directory."""

    def __init__(self, root):
        self.port, peer = free_port(), free_port()
        self.proc = subprocess.Popen(
            ["etcd", "--name", "kv", "--data-dir", f"{root}/etcd",
             "--listen-client-urls", f"http://127.0.0.1:{self.port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"kv=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        eventually("etcd accepts connections", lambda: accepts(self.port))

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(params=["embedded", "etcd"])
def store_registry(request):
    """A registry on each store backend."""
    with tempfile.TemporaryDirectory() as root:
        etcd = Etcd(root) if request.param == "etcd" else None
        try:
            extra = ["--store", f"etcd://127.0.0.1:{etcd.port}"] if etcd else []
            registry = Registry(f"{root}/data", extra)
            try:
                yield registry
            finally:
                registry.stop()
        finally:
            if etcd:
                etcd.stop()


@pytest.fixture
def acl_registry():
    """A registry with ACLs on and default deny, not bootstrapped yet."""
    with tempfile.TemporaryDirectory() as data_dir:
        reg = Registry(data_dir, ["--acl", "--acl-default-policy", "deny"])
        try:
            yield reg
        finally:
            reg.stop()


class HealthTarget:
    """An HTTP server whose answer code the test controls."""

    def __init__(self):
        target = self
        self.code = 200

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(target.code)
                self.end_headers()
                self.wfile.write(b"ok" if target.code == 200 else b"failing")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def health_target():
    target = HealthTarget()
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture
def tcp_target():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock
    finally:
        sock.close()
