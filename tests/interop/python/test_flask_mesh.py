"""The Flask examples (examples/flask/) under `wharf up`: any language joins the mesh."""

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from conftest import ROOT, WHARF, eventually


def test_flask_services_run_under_the_mesh():
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "wharf.toml"
        flask = ROOT / "examples" / "flask"
        manifest.write_text(f"""
[registry]
http = "127.0.0.1:0"
dns = "127.0.0.1:0"
data_dir = "{tmp}/data"

[gateway]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[services.hello]
command = ["{sys.executable}", "{flask / 'hello.py'}"]
replicas = 2
check = {{ http = "/healthz", interval = "1s", timeout = "1s" }}

[services.api]
command = ["{sys.executable}", "{flask / 'api.py'}"]
replicas = 1
check = {{ http = "/healthz", interval = "1s", timeout = "1s" }}
""")
        mesh = subprocess.Popen([WHARF, "up", "-f", str(manifest)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "WHARF_LOG": "warn"}, start_new_session=True)
        try:
            registry = mesh.stdout.readline().split()[-1]
            mesh.stdout.readline()  # DNS
            gateway = mesh.stdout.readline().split()[-1]

            def passing(name):
                with urllib.request.urlopen(f"{registry}/v1/health/service/{name}?passing") as r:
                    return len(json.load(r))

            eventually("two hello and one api passing", lambda: passing("hello") == 2 and passing("api") == 1, 60)

            def get(host, path):
                req = urllib.request.Request(f"{gateway}{path}", headers={"Host": host})
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.read().decode()

            assert get("hello", "/") == "Hello, World!"
            assert json.loads(get("api.service.wharf", "/api?data=7")) == {"result": "7"}
        finally:
            mesh.terminate()
            try:
                mesh.wait(timeout=20)
            finally:
                if mesh.poll() is None:
                    os.killpg(mesh.pid, 9)
                    mesh.wait()
        assert mesh.returncode == 0
