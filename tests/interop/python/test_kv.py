"""py-consul (PyPI) on Wharf's KV store, sessions and transactions, used as py-consul's
README shows, on both store backends: the embedded one and a real etcd (Debian's
etcd-server, one member on free loopback ports, killed at the end). Round trips with every
flag, CAS conflicts, blocking reads that wake on their own key only, sessions with `release`
and `delete`, a transaction that fails one check and changes nothing, and a leader election
among three processes where `kill -9` of the leader hands leadership to another within twice
the TTL, never to two at once."""

import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import consul
import pytest

from conftest import eventually

HERE = Path(__file__).resolve().parent


def put_raw(registry, path, body):
    """A PUT without a client library: its status and body."""
    request = urllib.request.Request(f"http://{registry.host}:{registry.port}{path}", data=body, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode().strip()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode().strip()


def client(registry):
    return consul.Consul(host=registry.host, port=registry.port)


def test_kv_round_trips_with_every_flag(store_registry):
    c = client(store_registry)
    assert c.kv.put("app/config/db", "postgres://db:5432", flags=42)
    index, entry = c.kv.get("app/config/db")
    assert entry["Value"] == b"postgres://db:5432"
    assert entry["Flags"] == 42
    assert entry["CreateIndex"] == entry["ModifyIndex"] == int(index), "py-consul gives the index as text"
    assert c.kv.put("app/config/cache", "redis")
    assert c.kv.put("app/name", "hello")
    assert c.kv.put("app/empty", None)
    assert c.kv.get("app/empty")[1]["Value"] is None, "an empty value is null, as Consul's"

    _, entries = c.kv.get("app/", recurse=True)
    assert [e["Key"] for e in entries] == ["app/config/cache", "app/config/db", "app/empty", "app/name"]
    _, keys = c.kv.get("app/", keys=True, separator="/")
    assert keys == ["app/config/", "app/empty", "app/name"]
    _, keys = c.kv.get("app/config/", keys=True)
    assert keys == ["app/config/cache", "app/config/db"]

    missing_index, missing = c.kv.get("app/nothing")
    assert missing is None and int(missing_index) >= 1, "a 404 with an index"

    # CAS: 0 creates only; a stale index is refused; the current one wins.
    assert not c.kv.put("app/name", "other", cas=0)
    assert c.kv.put("app/fresh", "1", cas=0)
    index, entry = c.kv.get("app/name")
    assert not c.kv.put("app/name", "stale", cas=entry["ModifyIndex"] - 1)
    assert c.kv.put("app/name", "world", cas=entry["ModifyIndex"])
    assert c.kv.get("app/name")[1]["Value"] == b"world"
    assert not c.kv.delete("app/name", cas=entry["ModifyIndex"]), "stale: not deleted"
    assert c.kv.get("app/name")[1] is not None
    assert c.kv.delete("app/name", cas=c.kv.get("app/name")[1]["ModifyIndex"])
    assert c.kv.get("app/name")[1] is None

    assert c.kv.delete("app/config/", recurse=True)
    _, keys = c.kv.get("app/", keys=True)
    assert keys == ["app/empty", "app/fresh"]

    # 512 KiB is the largest value; one byte more is refused with the reason.
    big = "x" * (512 * 1024)
    assert c.kv.put("app/big", big)
    assert len(c.kv.get("app/big")[1]["Value"]) == 512 * 1024
    with pytest.raises(consul.ConsulException, match="at most 524288"):
        c.kv.put("app/big", big + "x")
    assert len(c.kv.get("app/big")[1]["Value"]) == 512 * 1024, "the refused write changed nothing"
    # (`a/../b` cannot be sent through py-consul: requests resolves the dots first; the Rust
    # tests send it raw.)
    for bad in ("a//b", "a/b//"):
        with pytest.raises(consul.ConsulException, match="Invalid key"):
            c.kv.put(bad, "x")


def test_a_blocking_read_wakes_on_its_own_key_only(store_registry):
    c = client(store_registry)
    assert c.kv.put("watched", "1")
    index, _ = c.kv.get("watched")
    seen = {}

    def watch():
        seen["index"], seen["entry"] = c.kv.get("watched", index=index, wait="30s")

    watcher = threading.Thread(target=watch)
    watcher.start()
    held = lambda: "wharf_registry_blocking_queries_held 1" in c.http.get(lambda r: r.body, "/metrics")  # noqa: E731
    eventually("the read is held", held)
    # A write elsewhere, then to the key: the read returns the key's new value, not the
    # first write's wake-up with the old one.
    assert c.kv.put("elsewhere", "x")
    assert c.kv.put("watched", "2")
    watcher.join(timeout=20)
    assert not watcher.is_alive()
    assert seen["entry"]["Value"] == b"2"
    assert int(seen["index"]) > int(index)

    # A prefix watch wakes on a deletion under it.
    assert c.kv.put("dir/a", "1")
    index, _ = c.kv.get("dir/", recurse=True)
    result = {}
    watcher = threading.Thread(target=lambda: result.update(r=c.kv.get("dir/", recurse=True, index=index, wait="30s")))
    watcher.start()
    assert c.kv.delete("dir/a")
    watcher.join(timeout=20)
    assert result["r"][1] is None and int(result["r"][0]) > int(index)


def test_sessions_release_or_delete_what_they_hold(store_registry):
    c = client(store_registry)
    keeper = c.session.create(name="keeper", ttl=30, lock_delay=0)
    ephemeral = c.session.create(name="ephemeral", behavior="delete", lock_delay=0)
    _, info = c.session.info(keeper)
    assert info["Name"] == "keeper" and info["TTL"] == "30s" and info["Behavior"] == "release"
    assert info["NodeChecks"] == ["serfHealth"]
    assert sorted(s["Name"] for s in c.session.list()[1]) == ["ephemeral", "keeper"]
    assert len(c.session.node(info["Node"])[1]) == 2
    assert c.session.renew(keeper)["ID"] == keeper

    assert c.kv.put("locks/a", "mine", acquire=keeper)
    assert not c.kv.put("locks/a", "theirs", acquire=ephemeral), "held: false, not an error"
    assert c.kv.put("locks/b", "ephemeral", acquire=ephemeral)
    assert c.kv.get("locks/a")[1]["Session"] == keeper
    with pytest.raises(consul.ConsulException, match="invalid session"):
        c.kv.put("locks/c", "x", acquire="0b0d0a1c-0000-4000-8000-000000000000")

    assert c.session.destroy(keeper)
    assert c.session.destroy(ephemeral)
    entry = c.kv.get("locks/a")[1]
    assert entry["Value"] == b"mine" and "Session" not in entry, "release keeps the key"
    assert c.kv.get("locks/b")[1] is None, "delete removes it"
    assert c.session.info(keeper)[1] is None
    with pytest.raises(consul.NotFound, match="not found"):
        c.session.renew(keeper)
    # py-consul checks the TTL's bounds itself; the registry checks them too.
    refused = put_raw(store_registry, "/v1/session/create", b'{"TTL": "5s"}')
    assert refused == (400, "Invalid Session TTL '5s', must be between [10s=24h0m0s]")


def test_a_transaction_that_fails_one_check_changes_nothing(store_registry):
    c = client(store_registry)
    assert c.kv.put("txn/a", "1")
    index = c.kv.get("txn/a")[1]["ModifyIndex"]
    b64 = lambda text: __import__("base64").b64encode(text.encode()).decode()  # noqa: E731
    with pytest.raises(consul.ConsulException) as failed:
        c.txn.put([
            {"KV": {"Verb": "set", "Key": "txn/b", "Value": b64("2")}},
            {"KV": {"Verb": "cas", "Key": "txn/a", "Value": b64("changed"), "Index": index + 7}},
        ])
    assert "index is stale" in str(failed.value)
    assert c.kv.get("txn/b")[1] is None, "the set before the failed check was not applied"
    assert c.kv.get("txn/a")[1]["Value"] == b"1"

    done = c.txn.put([
        {"KV": {"Verb": "check-index", "Key": "txn/a", "Index": index}},
        {"KV": {"Verb": "set", "Key": "txn/b", "Value": b64("2")}},
        {"KV": {"Verb": "get-tree", "Key": "txn/"}},
    ])
    assert done["Errors"] is None
    tree = [r["KV"]["Key"] for r in done["Results"][2:]]
    assert tree == ["txn/a", "txn/b"]
    with pytest.raises(consul.ConsulException, match="base64"):
        c.txn.put([{"KV": {"Verb": "set", "Key": "txn/c", "Value": "not base64!"}}])


def test_leader_election_survives_kill_9_of_the_leader(store_registry):
    ttl = 10
    views = {}
    lock = threading.Lock()
    violations = []
    procs = {}

    def follow(name, proc):
        for line in proc.stdout:
            event = json.loads(line)
            with lock:
                views[name] = event
                leaders = [n for n, v in views.items() if v["view"] == "leader" and procs[n].poll() is None]
                if len(leaders) > 1:
                    violations.append(dict(views))

    c = client(store_registry)
    try:
        for name in ("e1", "e2", "e3"):
            procs[name] = subprocess.Popen(
                [sys.executable, str(HERE / "elector.py"), store_registry.host,
                 str(store_registry.port), "service/leader", name, str(ttl)],
                stdout=subprocess.PIPE, text=True,
            )
            threading.Thread(target=follow, args=(name, procs[name]), daemon=True).start()

        def leader():
            with lock:
                live = [n for n, v in views.items() if v["view"] == "leader" and procs[n].poll() is None]
            entry = c.kv.get("service/leader")[1]
            if len(live) == 1 and entry and entry.get("Session") == views[live[0]]["session"]:
                return live[0]
            return None

        first = eventually("one leader, holding the key", leader)
        procs[first].kill()  # kill -9: no goodbye, the session must run out
        procs[first].wait()
        killed_at = time.monotonic()
        second = eventually("another leader", lambda: (l := leader()) and l != first and l, deadline=2 * ttl + 10)
        took = time.monotonic() - killed_at
        assert took <= 2 * ttl + 2, f"leadership moved after {took:.1f} s"
        assert not violations, f"two leaders at once: {violations}"
        assert second != first
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
