"""Real DNS clients against `wharf registry`: `dig` for each name form, and HAProxy balancing
over the SRV name with a `resolvers` section and `server-template`, dropping an instance
whose check fails and taking it back when it passes."""

import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import Path

import consul
import pytest

from conftest import eventually


def dig(registry, name, qtype="A", *extra):
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(registry.dns_port), name, qtype, "+short", "+tries=1", "+time=2", *extra],
        capture_output=True, text=True, timeout=10,
    )
    assert out.returncode == 0, out.stderr
    return sorted(line for line in out.stdout.splitlines() if line)


def dig_status(registry, name, qtype="A"):
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(registry.dns_port), name, qtype, "+tries=1", "+time=2"],
        capture_output=True, text=True, timeout=10,
    )
    for line in out.stdout.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    raise AssertionError(out.stdout)


def register_hello(c, ports):
    for i, port in enumerate(ports, 1):
        c.agent.service.register("hello", service_id=f"hello-{i}", address="127.0.0.1", port=port,
                                 tags=[f"v{i}"], check=consul.Check.ttl("1h"))
        c.agent.check.ttl_pass(f"service:hello-{i}")


@pytest.mark.skipif(shutil.which("dig") is None and not os.environ.get("CI"), reason="dig not installed (tests/interop/run.sh installs it)")
def test_dig_zone_apex(registry):
    for domain in ["wharf.", "consul."]:
        assert dig_status(registry, domain, "SOA") == "NOERROR"
        soa = dig(registry, domain, "SOA")
        assert len(soa) == 1 and soa[0].startswith(f"ns.{domain} hostmaster.{domain} "), soa
        assert dig_status(registry, domain, "NS") == "NOERROR"
        [server] = dig(registry, domain, "NS")
        assert server.endswith(f".node.dc1.{domain}"), server
        assert dig(registry, server) == ["127.0.0.1"], "the name server's name resolves"
        out = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(registry.dns_port), domain, "AXFR", "+tries=1", "+time=2"],
            capture_output=True, text=True, timeout=10,
        )
        assert "NOTIMP" in out.stdout or "Transfer failed" in out.stdout, out.stdout


@pytest.mark.skipif(shutil.which("dig") is None and not os.environ.get("CI"), reason="dig not installed (tests/interop/run.sh installs it)")
def test_dig_name_forms(registry):
    c = consul.Consul(host=registry.host, port=registry.port)
    register_hello(c, [9001, 9002, 9003])
    srv = dig(registry, "hello.service.wharf", "SRV")
    assert [line.split()[2] for line in srv] == ["9001", "9002", "9003"]
    assert all(line.endswith("7f000001.addr.dc1.wharf.") for line in srv)
    assert dig(registry, "hello.service.wharf") == ["127.0.0.1"]
    assert dig(registry, "hello.service.consul") == ["127.0.0.1"]
    assert [l.split()[2] for l in dig(registry, "v2.hello.service.wharf", "SRV")] == ["9002"]
    assert len(dig(registry, "_hello._tcp.service.wharf", "SRV")) == 3
    assert [l.split()[2] for l in dig(registry, "_hello._v3.service.wharf", "SRV")] == ["9003"]
    assert dig(registry, "7f000001.addr.dc1.wharf") == ["127.0.0.1"]
    assert len(dig(registry, "hello.service.wharf", "SRV", "+tcp")) == 3
    assert dig_status(registry, "nothing.service.wharf") == "NXDOMAIN"
    assert dig_status(registry, "hello.service.wharf", "AAAA") == "NOERROR"

    c.agent.check.ttl_fail("service:hello-2")
    assert [l.split()[2] for l in dig(registry, "hello.service.wharf", "SRV")] == ["9001", "9003"]


class Backend:
    """An HTTP server that answers with its own name."""

    def __init__(self, name):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("haproxy") is None and not os.environ.get("CI"), reason="haproxy not installed (tests/interop/run.sh installs it)")
def test_haproxy_balances_over_the_srv_name(registry):
    backends = [Backend(f"hello-{i}") for i in (1, 2, 3)]
    front = free_port()
    config = f"""
global
    log stderr format raw local0 warning
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
resolvers wharf
    nameserver wharf 127.0.0.1:{registry.dns_port}
    accepted_payload_size 8192
    resolve_retries 3
    timeout resolve 200ms
    timeout retry 200ms
    hold valid 200ms
    hold obsolete 0s
    hold nx 200ms
frontend hello
    bind 127.0.0.1:{front}
    default_backend hello
backend hello
    balance roundrobin
    server-template hello 5 _hello._tcp.service.wharf resolvers wharf resolve-prefer ipv4 init-addr none
"""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(config)
        haproxy = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        try:
            c = consul.Consul(host=registry.host, port=registry.port)
            register_hello(c, [b.port for b in backends])

            def served(requests=30):
                names = set()
                for _ in range(requests):
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{front}/", timeout=2) as r:
                            names.add(r.read().decode())
                    except OSError:
                        pass
                return names

            eventually("HAProxy serves all three", lambda: served() == {"hello-1", "hello-2", "hello-3"})
            c.agent.check.ttl_fail("service:hello-2")
            eventually("HAProxy drops hello-2", lambda: served() == {"hello-1", "hello-3"})
            c.agent.check.ttl_pass("service:hello-2")
            eventually("HAProxy takes hello-2 back", lambda: served() == {"hello-1", "hello-2", "hello-3"})
        finally:
            haproxy.kill()
            haproxy.wait()
            for b in backends:
                b.stop()
