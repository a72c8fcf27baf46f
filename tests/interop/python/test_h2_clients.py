"""Other HTTP/2 implementations against a sidecar's inbound side, which is Wharf's own HTTP/2
server: nghttp (nghttp2's client, strict about the protocol) and curl, each with a client
certificate from `/v1/agent/connect/ca/leaf/<service>`. Many streams on one connection, bodies
larger than the windows both ways, a tiny window for the answers, trailers, a body without a
length, and a header block too large for one frame (answered 431)."""

import hashlib
import http.server
import json
import os
import re
import subprocess
import tempfile
import threading
import urllib.request

import pytest

from conftest import WHARF, Registry, eventually


class EchoApp:
    """An HTTP/1.1 app that answers a request with its body, and says what it saw in headers."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def read_body(self):
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    body = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b""):
                                pass
                            return body, "chunked"
                        body += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length", 0))
                return self.rfile.read(length), "length"

            def answer(self):
                body, framing = self.read_body()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("x-framing", framing)
                self.send_header("x-body-sha256", hashlib.sha256(body).hexdigest())
                self.send_header("x-big-length", str(len(self.headers.get("x-big", ""))))
                self.end_headers()
                self.wfile.write(body)

            do_GET = answer
            do_POST = answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Sidecar:
    """`wharf sidecar` for `service` in front of `app`, inbound side only."""

    def __init__(self, registry, service, app, log):
        self.proc = subprocess.Popen(
            [WHARF, "sidecar", "--service", service, "--registry", f"http://{registry.host}:{registry.port}",
             "--app", app, "--outbound", "none"],
            stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "WHARF_LOG": "info"},
        )
        line = self.proc.stdout.readline()
        self.inbound_port = int(line.strip().rsplit(":", 1)[-1])

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def mesh():
    """A registry, the echo app behind an `api` sidecar, and the leaf of a `web` caller."""
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(f"{tmp}/data")
        app = EchoApp()
        with open(f"{tmp}/sidecar.log", "w") as log:
            sidecar = Sidecar(registry, "api", app.addr, log)
        try:
            base = f"http://{registry.host}:{registry.port}"
            with urllib.request.urlopen(f"{base}/v1/agent/connect/ca/leaf/web") as r:
                leaf = json.load(r)
            with urllib.request.urlopen(f"{base}/v1/connect/ca/roots?pem=true") as r:
                roots = r.read()
            files = {"cert": leaf["CertPEM"].encode(), "key": leaf["PrivateKeyPEM"].encode(), "roots": roots}
            for name, content in files.items():
                with open(f"{tmp}/{name}.pem", "wb") as f:
                    f.write(content)
            # nghttp checks no server name: it is given the address.
            url = f"https://127.0.0.1:{sidecar.inbound_port}"
            mesh = {"tmp": tmp, "port": sidecar.inbound_port, "url": url}
            eventually("the sidecar answers nghttp", lambda: b":status: 200" in nghttp(mesh, "-v", url).stdout)
            yield mesh
        finally:
            sidecar.stop()
            app.stop()
            registry.stop()


def nghttp(mesh, *args):
    """nghttp with the web leaf against the api sidecar (nghttp checks no server certificate)."""
    tmp = mesh["tmp"]
    return subprocess.run(
        ["nghttp", "--cert", f"{tmp}/cert.pem", "--key", f"{tmp}/key.pem", "-t", "20", *args],
        capture_output=True, timeout=60,
    )


def body_file(mesh, size):
    path = f"{mesh['tmp']}/body-{size}"
    content = bytes((i * 7) % 251 for i in range(size))
    with open(path, "wb") as f:
        f.write(content)
    return path, content


def received(out):
    """From nghttp's -v output: per stream, its status, the app's checksum of what it got,
    the DATA bytes that came back, and whether the stream ended."""
    streams = {}
    lines = out.splitlines()
    for at, line in enumerate(lines):
        head = re.search(r"recv \(stream_id=(\d+)\) ([^:]+|:status): (.*)", line)
        if head:
            streams.setdefault(int(head[1]), {"data": 0, "end": False})[head[2]] = head[3]
        data = re.search(r"recv DATA frame <length=(\d+), flags=0x(\d+), stream_id=(\d+)>", line)
        if data:
            stream = streams.setdefault(int(data[3]), {"data": 0, "end": False})
            stream["data"] += int(data[1])
            stream["end"] |= int(data[2], 16) & 1 == 1
    return streams


def test_many_streams_with_bodies_larger_than_the_windows(mesh):
    # 8 uploads at once of 1.5 MiB each: more than a stream's window (1 MiB) and, together,
    # more than the connection's; the answers come back through 4 KiB stream windows.
    path, content = body_file(mesh, 3 << 19)
    done = nghttp(mesh, "-v", "-n", "-m", "8", "-w", "12", "-d", path, f"{mesh['url']}/upload")
    out = done.stdout.decode(errors="replace")
    streams = received(out)
    assert len(streams) == 8, out[-3000:]
    checksum = hashlib.sha256(content).hexdigest()
    for id, stream in streams.items():
        assert (stream[":status"], stream["x-body-sha256"]) == ("200", checksum), id
        assert (stream["data"], stream["end"]) == (len(content), True), id
    assert "RST_STREAM" not in out


def test_trailers_and_a_body_without_a_length(mesh):
    path, content = body_file(mesh, 100_000)
    header = "h" * 12_000  # within our 16 KiB header list
    done = nghttp(mesh, "-v", "--no-content-length", "--trailer", "x-checksum: 1",
                  "-H", f"x-big: {header}", "-d", path, f"{mesh['url']}/upload")
    out = done.stdout.decode(errors="replace")
    assert "recv (stream_id=13) :status: 200" in out, out[-3000:]
    assert "x-framing: chunked" in out
    assert f"x-body-sha256: {hashlib.sha256(content).hexdigest()}" in out
    assert f"x-big-length: {len(header)}" in out
    assert "RST_STREAM" not in out


def test_a_header_block_over_the_limit_is_answered_431(mesh):
    # 40 KB: HEADERS and CONTINUATION frames, put together, then found too large.
    done = nghttp(mesh, "-v", "-H", f"x-big: {'b' * 40_000}", f"{mesh['url']}/")
    out = done.stdout.decode(errors="replace")
    assert "recv (stream_id=13) :status: 431" in out, out[-2000:]
    # The sidecar goes on serving.
    again = nghttp(mesh, "-v", f"{mesh['url']}/")
    assert "recv (stream_id=13) :status: 200" in again.stdout.decode(errors="replace")


def test_curl_posts_a_body_over_http2(mesh):
    path, content = body_file(mesh, 2 << 20)
    tmp = mesh["tmp"]
    done = subprocess.run(
        ["curl", "-s", "--http2", "-m", "30", "--resolve", f"api.svc.wharf:{mesh['port']}:127.0.0.1",
         "--cert", f"{tmp}/cert.pem", "--key", f"{tmp}/key.pem",
         "--cacert", f"{tmp}/roots.pem", "--data-binary", f"@{path}", "-D", f"{tmp}/head",
         f"https://api.svc.wharf:{mesh['port']}/upload"],
        capture_output=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    head = open(f"{tmp}/head").read()
    assert head.startswith("HTTP/2 200"), head
    assert "x-framing: length" in head
    assert done.stdout == content
