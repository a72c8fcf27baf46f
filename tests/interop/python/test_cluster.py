"""py-consul against registry nodes on one etcd (Debian's etcd-server, started here on free
loopback ports with a scratch data directory, killed at the end): a registration through one
node is seen through the other, a blocking query held on one wakes on a change made through
the other, and each node lists both in its catalog of nodes."""

import subprocess
import tempfile
import threading

import consul
import pytest

from conftest import Registry, accepts, eventually, free_port


@pytest.fixture
def etcd():
    with tempfile.TemporaryDirectory() as data_dir:
        client, peer = free_port(), free_port()
        proc = subprocess.Popen(
            ["etcd", "--name", "interop", "--data-dir", data_dir,
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"interop=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            eventually("etcd accepts connections", lambda: accepts(client))
            yield f"etcd://127.0.0.1:{client}"
        finally:
            proc.kill()
            proc.wait()


@pytest.fixture
def two_nodes(etcd):
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        nodes = []
        try:
            for name, data in (("a", a_dir), ("b", b_dir)):
                nodes.append(Registry(data, ["--store", etcd, "--node", name]))
            yield nodes
        finally:
            for node in nodes:
                node.stop()


def test_py_consul_sees_one_catalog_through_every_node(two_nodes):
    a, b = (consul.Consul(host=n.host, port=n.port) for n in two_nodes)
    assert a.agent.service.register("web", service_id="web-1", port=9001,
                                    check=consul.Check.ttl("30s"))
    assert a.agent.check.ttl_pass("service:web-1")
    eventually("b sees the instance registered through a",
               lambda: [e["Service"]["ID"] for e in b.health.service("web", passing=True)[1]] == ["web-1"])
    _, entries = b.health.service("web")
    assert entries[0]["Node"]["Node"] == "a", "the instance belongs to the node it came through"
    assert sorted(n["Node"] for n in b.catalog.nodes()[1]) == ["a", "b"]

    # A blocking query held on b wakes on a change made through a.
    index, _ = b.health.service("web")
    woken = {}

    def hold():
        woken["answer"] = b.health.service("web", index=index, wait="30s")

    holder = threading.Thread(target=hold)
    holder.start()
    assert a.agent.service.register("web", service_id="web-2", port=9002)
    holder.join(timeout=30)
    assert not holder.is_alive(), "the query held on b did not wake"
    new_index, entries = woken["answer"]
    assert int(new_index) > int(index)
    assert sorted(e["Service"]["ID"] for e in entries) == ["web-1", "web-2"]
