"""Every Consul endpoint family that Wharf does not answer yet must make every client raise,
never return something that reads as "absent" or as success (a 404 did: python-consul2's
kv.put(acquire=...) returned a truthy tuple, i.e. "lock acquired").

Each client runs unimplemented_calls.py in its own environment, because all of them are the
`consul` package: py-consul 1.8 from the suite's venv, python-consul 1.1 and python-consul2
0.1.5 installed by run.sh into .clients/, Debian's python3-consul 0.7.1 with Debian's python."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CLIENTS_DIR = HERE.parent / ".clients"
CALLS = HERE / "unimplemented_calls.py"

CLIENTS = {
    "py-consul 1.8": (sys.executable, None),
    "python-consul 1.1": (sys.executable, CLIENTS_DIR / "python-consul"),
    "python-consul2 0.1.5": (sys.executable, CLIENTS_DIR / "python-consul2"),
    "Debian python3-consul 0.7.1": ("/usr/bin/python3", None),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_every_unimplemented_family_raises(registry, client):
    python, path = CLIENTS[client]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if path is not None:
        assert path.is_dir(), f"{client} is not installed in {path} (tests/interop/run.sh installs it)"
        env["PYTHONPATH"] = str(path)
    run = subprocess.run(
        [python, str(CALLS), registry.host, str(registry.port)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    outcomes = [json.loads(line) for line in run.stdout.splitlines()]
    tried = [o for o in outcomes if not o.get("missing")]
    assert len(tried) >= len(outcomes) // 2, f"{client} exposes too few of the calls: {outcomes}"
    for outcome in tried:
        assert "raised" in outcome, f"{client} {outcome['call']} did not raise: {outcome}"
        assert "does not implement" in outcome["message"], f"{client} {outcome['call']}: {outcome}"
        assert outcome["family"] in outcome["message"], f"{client} {outcome['call']}: {outcome}"
