"""Calls every Consul endpoint family that Wharf answers 501, through whichever Python Consul
client is importable as `consul` (py-consul, python-consul, python-consul2, Debian's
python3-consul), and prints one JSON line per call: what it raised or returned.

Run by test_unimplemented.py as `python unimplemented_calls.py HOST PORT` with the client on
the path; it is not a test module itself, because the clients cannot share one environment
(they are all the `consul` package)."""

import json
import sys

import consul

host, port = sys.argv[1], int(sys.argv[2])
c = consul.Consul(host=host, port=port)

# (family, call) pairs; a call whose API the client lacks is reported as missing.
CALLS = [
    ("/v1/acl", "acl.list", lambda: c.acl.list()),
    ("/v1/acl", "acl.create", lambda: c.acl.create()),
    ("/v1/agent/join", "agent.join", lambda: c.agent.join("127.0.0.1")),
    ("/v1/agent/join", "agent.force_leave", lambda: c.agent.force_leave("other")),
    ("/v1/coordinate", "coordinate.nodes", lambda: c.coordinate.nodes()),
    ("/v1/coordinate", "coordinate.datacenters", lambda: c.coordinate.datacenters()),
    ("/v1/operator", "operator.raft_config", lambda: c.operator.raft_config()),
    ("/v1/query", "query.list", lambda: c.query.list()),
    ("/v1/query", "query.create", lambda: c.query.create("db")),
    ("/v1/config", "config.list", lambda: c.config.list("service-defaults")),
    ("/v1/snapshot", "snapshot.save", lambda: c.snapshot.save()),
    ("/v1/discovery-chain", "discovery_chain.get", lambda: c.discovery_chain.get("web")),
]


def available(dotted):
    target = c
    for part in dotted.split(" ")[0].split("."):
        if not hasattr(target, part):
            return False
        target = getattr(target, part)
    return True


for family, name, call in CALLS:
    if not available(name):
        outcome = {"missing": True}
    else:
        try:
            outcome = {"returned": repr(call())}
        except TypeError as error:
            # This client's version of the call takes other arguments: not a call it can make.
            outcome = {"missing": True, "signature": str(error)}
        except Exception as error:  # every client raises its own class; the text is what counts
            outcome = {"raised": type(error).__name__, "message": str(error)}
    print(json.dumps({"family": family, "call": name, **outcome}), flush=True)
